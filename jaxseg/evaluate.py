"""Score a trained run's checkpoint on a split: whole images, sliding windows, TTA.

    python -m jaxseg.evaluate --workdir runs/mem --split val
    python -m jaxseg.evaluate --workdir runs/mem --checkpoint best \\
      --config.eval.mode=slide --config.eval.crop_size="(256, 256)" \\
      --config.eval.stride="(170, 170)" --config.eval.flip=True

Reads the run's config.json and dataset.json (no Python from the workdir), restores params
and BatchNorm statistics only, onto the devices present, and evaluates with
jaxseg.inference as training does: whole-mode evaluation of the final checkpoint equals the
run's last logged val/miou. `--config.eval.*` and `--config.data.*` apply on top of the
saved config (data.mean and data.std belong to the trained model and cannot change).

Prints the per-class table and writes <workdir>/eval/<split>_step<N>_<mode>[_crf].json (or --out):
every score, the confusion matrix, the checkpoint step, the inference settings, images/s and
versions; and beside it a PNG of the row-normalised confusion matrix. A run of
--config.seeds=N is scored replica by replica, each on its own seed's split: the JSON adds
"per_seed" and "spread" (mean, std, 95 % t interval per score) and the table shows them.
"""

from __future__ import annotations

import json
import shlex
import sys

import jax
import numpy as np
from absl import flags

from jaxseg import (
    cli,
    config_checks,
    configs,
    evaluation,
    metrics,
    provenance,
    recipe,
    seeds,
    sharding,
    visualize,
)
from jaxseg import workdir as run_files

FIXED_DATA = ("data.mean", "data.std")  # part of the trained model
ALLOWED = ("eval", "data")  # --config.* sections that act here


def evaluate_run(
    workdir: str,
    *,
    split: str = "val",
    checkpoint: str = "latest",
    overrides: dict | None = None,
    out: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluates the run in workdir; returns the report written to `out` (see module doc)."""
    # ---- The run: its config, labels and model; the overrides on top --------------------
    fixed = [k for k in overrides or {} if k in FIXED_DATA]
    if fixed:
        raise configs.ConfigError(f"--config.{fixed[0]} belongs to the trained model")
    config = config_checks.trained_config(workdir, overrides)
    labels = run_files.read_dataset(workdir)
    class_names = labels["class_names"]
    mesh = sharding.make_mesh()
    model = recipe.build_model(config, len(class_names))
    settings = recipe.inference_settings(config, mesh.devices.size)
    eval_fn = evaluation.jit_eval_step(
        recipe.eval_step(config, model, len(class_names), mesh, settings), mesh
    )

    # ---- Evaluate each replica (one unless config.seeds > 1) on its seed's split ----------
    per_seed, timing = [], {}
    for index, seeded in enumerate(seeds.replica_configs(config)):  # seed + index's split
        variables, step = recipe.inference_variables(
            config, model, workdir, checkpoint, mesh, index if config.seeds > 1 else None
        )
        source = recipe.make_source(seeded, split)
        if tuple(source.class_names) != class_names:
            raise configs.ConfigError(
                f"the {split} split's classes {list(source.class_names)} are not the run's "
                f"{list(class_names)}"
            )
        per_seed.append(
            evaluation.evaluate(
                eval_fn, variables, seeded, source, mesh, progress=progress, timing=timing
            )
        )
    scores = per_seed[0]

    # ---- Report --------------------------------------------------------------------------
    report = {
        "workdir": str(run_files.path(workdir)),
        "split": split,
        "checkpoint_step": step,
        "num_examples": len(source),
        "class_names": list(class_names),
        "scores": metrics.json_scores(scores, class_names),
        "confusion": scores["confusion"].tolist(),
        **_spread(per_seed, config, class_names),
        "inference": settings.describe()
        | {
            "size": list(config.eval.size),
            "shorter_side": config.eval.shorter_side,
            "batch_size": config.eval.batch_size,
        },
        "seconds": timing["seconds"],
        "images_per_s": timing["images_per_s"],
        "input_stall": timing["input_stall"],
        "devices": f"{mesh.devices.size} x {jax.devices()[0].device_kind}",
        **provenance.stamp(),  # "date", "versions"
    }
    if jax.process_index() == 0:
        name = f"{split}_step{step}_{settings.mode}{'_crf' if settings.crf else ''}.json"
        target = run_files.path(out) if out else run_files.path(workdir, "eval", name)
        target.parent.mkdir(parents=True, exist_ok=True)
        run_files.write_text_atomic(target, json.dumps(report, indent=2))
        png = target.parent / (target.stem + "_confusion.png")
        with png.open("wb") as f:
            visualize.confusion_image(report["confusion"], class_names).save(f, format="PNG")
        report["files"] = [str(target), str(png)]
    if config.seeds > 1:
        table = seeds.format_table(seeds.combined_scores(per_seed, _seeds(config)), class_names)
    else:
        table = metrics.format_table(scores, class_names)
    return report | {"table": table}


def _seeds(config) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


def _spread(per_seed: list, config, class_names) -> dict:
    """For a seeds > 1 run: "seeds", "per_seed" (each replica's scores and confusion; the
    report's "scores" and "confusion" are the first's) and "spread": every score's mean,
    std, 95 % t interval and per-seed values (jaxseg.seeds.flat_scores)."""
    if config.seeds == 1:
        return {}
    combined = seeds.combined_scores(per_seed, _seeds(config))
    flat = seeds.flat_scores(combined, class_names)
    return {
        "seeds": _seeds(config),
        "per_seed": [
            {"scores": metrics.json_scores(s, class_names), "confusion": s["confusion"].tolist()}
            for s in per_seed
        ],
        "spread": {k: None if np.isnan(v) else float(v) for k, v in flat.items()},
    }


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "the run's directory (jaxseg.train --workdir)", **define)
    flags.DEFINE_enum("split", "val", ["train", "val", "test"], "split to score", **define)
    flags.DEFINE_string("checkpoint", "latest", "latest, best (by val/miou) or a step", **define)
    flags.DEFINE_string(
        "out",
        None,
        "report file (default <workdir>/eval/<split>_step<N>_<mode>[_crf].json)",
        **define,
    )
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def main(argv=None) -> dict:
    """The command line: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags(argv)
    prog = "jaxseg.evaluate"
    cli.parse_flags(fv, argv, prog=prog, doc=__doc__, config_from="workdir", allowed=ALLOWED)
    flags.FLAGS.mark_as_parsed()
    sharding.initialize_distributed()
    try:
        report = evaluate_run(
            fv.workdir,
            split=fv.split,
            checkpoint=fv.checkpoint,
            overrides=cli.overrides(fv, argv, ALLOWED),
            out=fv.out,
        )
    except (configs.ConfigError, FileNotFoundError) as e:
        cli.fail(prog, str(e))
    if jax.process_index() == 0:
        print(
            f"{fv.split} split, checkpoint step {report['checkpoint_step']}, "
            f"{report['inference']['mode']} mode: {report['num_examples']} images, "
            f"{report['images_per_s']:.1f} images/s"
            + (
                f", input stall {report['input_stall']:.1%}"
                if report["input_stall"] is not None
                else ""
            )
        )
        print(report["table"])
        print(f"wrote {' and '.join(report['files'])}")
        print(f"command: {shlex.join(['python', '-m', prog, *argv])}")
    return report


if __name__ == "__main__":
    cli.run(main)
