"""Checkpoints with orbax (the only module that imports it).

A step directory holds two items: "state" (the TrainState arrays) and "data" (each
process's grain iterator state). Saves are asynchronous. Kept: the newest
`keep` steps plus the best by val/miou; the newest is never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from jaxseg import workdir as run_files

BEST_METRIC = "val/miou"

# orbax warns through absl on every read-only manager and on every save without metrics
# (most saves: metrics exist only at evaluation steps); neither needs the user's attention.
_EXPECTED = (
    "read_only=True, setting",
    "Given directory is read only",
    "did not provide metrics",
)


class _DropExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _EXPECTED)


logging.getLogger("absl").addFilter(_DropExpectedWarnings())


def make_manager(directory: str, *, keep: int = 3) -> ocp.CheckpointManager:
    preservation = policies.AnyPreservationPolicy(
        [
            policies.LatestN(n=max(keep, 1)),
            policies.BestN(
                get_metric_fn=lambda m: m[BEST_METRIC],
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        # best_fn makes orbax write each save's metrics to disk, so that the best step is
        # known after a restart (resume, jaxseg.evaluate --checkpoint best).
        best_fn=lambda m: m[BEST_METRIC],
        best_mode="max",
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,  # a save cut off by a crash leaves a tmp dir
    )
    return ocp.CheckpointManager(
        run_files.path(directory), options=options, item_names=("state", "data", "log")
    )


class DiskFullError(OSError):
    """A checkpoint could not be written: no space left. The ones before it are intact."""


def _disk_full(error: BaseException | None) -> bool:
    while error is not None:  # orbax re-raises a background thread's error, wrapped
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def _diagnose(manager):
    try:
        yield
    except Exception as e:
        if _disk_full(e):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on the device while writing a checkpoint in {manager.directory}; "
                f"the checkpoints before it are intact: free space, then run the same command "
                f"again to resume",
            ) from e
        raise


def save(
    manager, step: int, state, data_iterator, metrics: dict | None = None, log: dict | None = None
) -> None:
    """Starts an asynchronous save; the iterator state is captured before this returns.
    log: small JSON-able host state of the trainer (its unlogged steps), saved as "log".
    A full disk (here or from the previous save's background write) raises DiskFullError."""
    items = {
        "state": ocp.args.StandardSave(state),
        "data": grain.checkpoint.CheckpointSave(data_iterator),
    }
    if log is not None:
        items["log"] = ocp.args.JsonSave(log)
    with _diagnose(manager):
        manager.save(
            step,
            args=ocp.args.Composite(**items),
            metrics={BEST_METRIC: metrics[BEST_METRIC]} if metrics else None,
            force=True,
        )


def wait(manager) -> None:
    """Waits for the save in flight; DiskFullError when the disk filled up."""
    with _diagnose(manager):
        manager.wait_until_finished()


def restore_latest(manager, state, data_iterator, *, log=print):
    """(state, step) from the newest checkpoint that restores, or (None, 0) when there is none.

    `state`: the target's shapes and shardings (arrays, or jax.ShapeDtypeStructs with
    shardings: then no state is allocated before the restore).
    The data iterator is restored in place. Newer steps that fail to restore while an older
    one restores are damaged (a file truncated or deleted inside them): each is moved to
    <workdir>/damaged_checkpoints/ with a warning naming it, so its step can be saved again.
    When no step restores, nothing is moved and the newest step's error is raised: that is
    a mismatch (another model or version), not damage.
    """
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                ),
            )
        except Exception as e:  # orbax and tensorstore raise many types for a bad file
            if _state_restores(manager, step, state):
                raise  # the arrays are intact: a mismatch (say, grain workers), not damage
            failed.append((step, e))
            continue
        directory = epath.Path(manager.directory)
        for bad, e in failed:
            aside = directory.parent / "damaged_checkpoints" / str(bad)
            if jax.process_index() == 0:
                aside.parent.mkdir(parents=True, exist_ok=True)
                (directory / str(bad)).rename(aside)
            log(
                f"warning: checkpoint {bad} in {directory} cannot be restored "
                f"({type(e).__name__}: {str(e)[:200]}); moved to {aside}; "
                f"resuming from step {step}"
            )
        if failed:
            manager.reload()
        return restored["state"], step
    if failed:
        raise failed[0][1]
    return None, 0


def restore_log(manager, step: int) -> dict | None:
    """The trainer's "log" item of checkpoint `step` (None for checkpoints without one)."""
    try:
        return manager.restore(step, args=ocp.args.Composite(log=ocp.args.JsonRestore()))["log"]
    except Exception:  # written before the item existed, or unreadable: start a new window
        return None


def _state_restores(manager, step: int, state) -> bool:
    try:
        manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state)))
    except Exception:  # see restore_latest
        return False
    return True


def checkpoints_dir(location: str, what: str) -> tuple[epath.Path, int | None]:
    """(checkpoints directory, step or None) from a workdir, its checkpoints/ or one step
    directory in it; local or an object-store URL. `what` names the option in errors."""
    path = run_files.path(location)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    step = None
    if path.name.isdigit() and (path / "state").is_dir():
        path, step = path.parent, int(path.name)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: {path} is not a directory")
    return path, step


def choose_step(path: str, which: str = "latest") -> int:
    """The checkpoint step that `which` names in a workdir (or its checkpoints/): "latest",
    "best" (highest val/miou among the kept checkpoints) or a step number."""
    directory, _ = checkpoints_dir(path, "--workdir")
    with ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(read_only=True), item_names=("state",)
    ) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        if which == "latest":
            return steps[-1]
        if which == "best":
            scored = [
                (float(m[BEST_METRIC]), s)
                for s in steps
                if (m := manager.metrics(s)) and m.get(BEST_METRIC) is not None
            ]
            if not scored:
                raise FileNotFoundError(f"no checkpoint in {directory} has {BEST_METRIC}")
            return max(scored)[1]
    if not which.isdigit() or int(which) not in steps:
        raise FileNotFoundError(
            f"--checkpoint={which}: not a checkpoint of {directory}; "
            f"valid: latest, best, {', '.join(map(str, steps))}"
        )
    return int(which)


def restore_variables(
    path: str, step: int, target: dict, replica: tuple[int, int] | None = None
) -> dict:
    """{"params", "batch_stats"} of checkpoint `step` under path (a workdir or its
    checkpoints/), and nothing else: no optimizer state or data iterator.

    target: the same tree of arrays or jax.ShapeDtypeStructs whose shardings say where the
    restored arrays go (whatever devices are present, not those that saved them).
    replica: (index, count): that seed's of a seeds > 1 run, whose state is a list of
    `count` TrainStates (orbax's partial restore refuses placeholders for the others, so
    every replica's variables are read and all but one dropped).
    """
    directory, _ = checkpoints_dir(path, "checkpoint")
    if replica is not None:
        target = [target] * replica[1]
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    with ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(read_only=True), item_names=("state",)
    ) as manager:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                )
            ),
        )["state"]
    restored = restored if replica is None else restored[replica[0]]
    return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def load_weights(path: str, state):
    """Copies params and batch_stats from a checkpoint into `state` (init_from).

    path: a run's workdir, its checkpoints/ directory, or one step directory in it.
    """
    directory, step = checkpoints_dir(path, "init_from")
    if step is None:
        with ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True), item_names=("state",)
        ) as manager:
            step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"init_from: no checkpoint found in {directory}")
    target = {"params": state.params, "batch_stats": state.batch_stats}
    restored = restore_variables(directory, step, target)
    return state.replace(params=restored["params"], batch_stats=restored["batch_stats"])
