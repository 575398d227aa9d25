"""N seeds in one run (config.seeds): N models trained side by side, scored with their spread.

Replica i uses seed config.seed + i for everything a seed decides (parameter init, the
synthetic or seeded-split data, data order, augmentation, dropout) and equals, bit for bit
on CPU, the run with --config.seed=<config.seed + i> alone. That is why each replica keeps
its own data source and iterator and runs the one compiled single-seed step: a vmapped
step (or lax.map, or N copies unrolled in one program) compiles other convolution and
reduction orders and drifts from the single run by 1e-8 to 1e-5 within 3 steps (measured
on 8 CPU devices, tiny U-Net). The steps are dispatched back to back without waiting.
config.seeds_vmap trades that equality for one vmapped program over all replicas (vmapped),
which keeps an accelerator busier when one small model leaves it mostly idle.

metrics.jsonl then holds, for every metric k: k (the mean over seeds), k/std (sample
standard deviation), k/ci95_low and k/ci95_high (95 % t interval of the mean) and
k/seed<s> for each seed s. With config.seeds = 1 nothing here changes a run.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxseg import configs, metrics, recipe, sharding


def seed_list(config) -> list[int]:
    """The replicas' seeds: config.seed + i for i < config.seeds."""
    if config.seeds < 1:
        raise configs.ConfigError(f"seeds={config.seeds} needs 1 or more")
    return [config.seed + i for i in range(config.seeds)]


def replica_configs(config) -> list:
    """One config per replica: its seed from seed_list, seeds 1 (a single-seed run's config,
    seeds_vmap off)."""
    out = []
    for seed in seed_list(config):
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.seed, c.seeds, c.seeds_vmap = seed, 1, False
        out.append(c)
    return out


def build(config, *, mesh, workdir, progress) -> list:
    """recipe.Parts per replica (the first one's config says seeds=N, as the run saves it)."""
    if config.seeds == 1:
        return [recipe.build(config, mesh=mesh, workdir=workdir, progress=progress)]
    parts = [
        recipe.build(c, mesh=mesh, workdir=workdir, progress=progress and i == 0)
        for i, c in enumerate(replica_configs(config))
    ]
    first = parts[0].config.copy_and_resolve_references()
    with first.unlocked():
        first.seeds, first.seeds_vmap = config.seeds, config.seeds_vmap
    return [dataclasses.replace(parts[0], config=first), *parts[1:]]


class ZipIterator:
    """The replicas' training streams as one: next() gives a tuple of batches; the state
    (for checkpoints) is every replica's, as JSON."""

    def __init__(self, iterators: list):
        self.iterators = iterators

    def __iter__(self):
        return self

    def __next__(self) -> tuple:
        return tuple(next(it) for it in self.iterators)

    def get_state(self) -> bytes:
        return json.dumps([_plain(it.get_state()) for it in self.iterators]).encode()

    def set_state(self, state) -> None:
        states = json.loads(state.decode() if isinstance(state, bytes) else state)
        if len(states) != len(self.iterators):
            raise ValueError(
                f"the checkpoint holds {len(states)} data streams; the run has "
                f"seeds={len(self.iterators)}"
            )
        for it, s in zip(self.iterators, states, strict=True):
            it.set_state(s.encode() if isinstance(s, str) else s)

    def start_prefetch(self) -> None:  # grain's checkpoint handler calls it after a restore
        for it in self.iterators:
            getattr(it, "start_prefetch", lambda: None)()

    def close(self) -> None:
        for it in self.iterators:
            getattr(it, "close", lambda: None)()


def _plain(state):
    return state.decode() if isinstance(state, bytes) else state


def train_iterator(parts: list, local_batch: int, *, workdir, progress):
    """The run's training stream: the single iterator, or a ZipIterator of one per replica."""
    iterators = []
    try:
        for p in parts:
            iterators.append(
                recipe.train_iterator(
                    p.config, p.train_source, local_batch, workdir=workdir, progress=progress
                )
            )
    except BaseException:
        ZipIterator(iterators).close()
        raise
    return iterators[0] if len(parts) == 1 else ZipIterator(iterators)


def abstract_state(parts: list):
    """The restore target: the TrainState, or a tuple of them (one per replica)."""
    return parts[0].abstract_state if len(parts) == 1 else tuple(p.abstract_state for p in parts)


def rngs(config) -> tuple:
    """(init key(s), step key(s)): split of key(seed), per replica for seeds > 1."""
    keys = [jax.random.split(jax.random.key(seed)) for seed in seed_list(config)]
    if config.seeds == 1:
        return keys[0][0], keys[0][1]
    return tuple(k[0] for k in keys), tuple(k[1] for k in keys)


def each(train_fn):
    """train_fn over replicas: (states, batches, rngs) tuples -> (states tuple, metrics with
    f32[N] values). Each call is dispatched without waiting for the previous one."""

    def step_all(states, batches, keys):
        outs = [train_fn(s, b, k) for s, b, k in zip(states, batches, keys, strict=True)]
        stacked = {k: jnp.stack([m[k] for _, m in outs]) for k in outs[0][1]}
        return tuple(s for s, _ in outs), stacked

    return step_all


def spreads(mesh, seeds: int) -> bool:
    """Whether the vmapped step spreads the replicas over the devices: when their number is a
    multiple of the data axis and no spatial axis is in use. Each device then trains whole
    replicas on their whole batches (no gradient all-reduce between devices); otherwise every
    replica's batch is split over the devices, as in a single-seed run."""
    data = mesh.shape[sharding.DATA_AXIS]
    return sharding.spatial_size(mesh) == 1 and data > 1 and seeds % data == 0


def vmapped(train_step, mesh, seeds: int):
    """config.seeds_vmap: train_step over the `seeds` replicas as one program, jitted with
    each's shardings and the states donated: (states, batches, rngs) tuples -> (states tuple,
    metrics with f32[N] values). The tuples are stacked and split inside the program, so
    checkpoints, evaluation and resume see the same tuple of states as with `each`.

    Where `spreads`, the stacked [N,...] replicas are split over the data axis by shard_map,
    each device vmapping its N / devices: XLA's partitioner, given the stack sharded by a
    constraint instead, split the grouped convolution that vmap makes of N kernels into
    invalid ones (jax 0.10.2: output features 5 not divisible by feature_group_count 8)."""
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    step = jax.vmap(train_step)
    if spreads(mesh, seeds):
        over_seeds = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
        step = jax.shard_map(step, mesh=mesh, in_specs=over_seeds, out_specs=over_seeds)

    def stack(trees):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

    def step_all(states, batches, keys):
        new, metrics = step(stack(states), stack(batches), jnp.stack(keys))
        return tuple(jax.tree.map(lambda a, i=i: a[i], new) for i in range(len(states))), metrics

    return jax.jit(
        step_all,
        in_shardings=(replicated, batch, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def to_global(batch, mesh):
    """sharding.to_global for one batch or a tuple of replica batches."""
    if isinstance(batch, tuple):
        return tuple(sharding.to_global(b, mesh) for b in batch)
    return sharding.to_global(batch, mesh)


# ----------------------------------------------------------------------- spread over seeds


def summary(values) -> dict:
    """{"mean", "std", "ci95_low", "ci95_high"} of f64 values (one per seed): sample std
    (ddof 1) and the two-sided 95 % t interval of the mean (n - 1 degrees of freedom)."""
    v = np.asarray(values, np.float64)
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1)) * std / np.sqrt(len(v))
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def expand(line: dict, seeds: list[int]) -> dict:
    """A log line whose per-seed values are sequences -> flat metrics.jsonl names: k (mean),
    k/std, k/ci95_low, k/ci95_high, k/seed<s>. Scalars pass through."""
    out = {}
    for key, value in line.items():
        if np.ndim(value) == 0:
            out[key] = value
            continue
        s = summary(value)
        out[key] = s["mean"]
        out |= {f"{key}/{name}": s[name] for name in ("std", "ci95_low", "ci95_high")}
        out |= {f"{key}/seed{seed}": float(v) for seed, v in zip(seeds, value, strict=True)}
    return out


def combined_scores(per_seed: list[dict], seeds: list[int]) -> dict:
    """Val scores of every replica as one dict: "miou" and "pixel_acc" their means (the best
    checkpoint and the progress line read these), "per_seed" the replicas' own, "seeds"."""
    return {
        "miou": float(np.mean([s["miou"] for s in per_seed])),
        "pixel_acc": float(np.mean([s["pixel_acc"] for s in per_seed])),
        "per_seed": per_seed,
        "seeds": seeds,
    }


def flat_scores(scores: dict, class_names) -> dict:
    """metrics.flat_scores, with the spread over seeds for a combined_scores dict."""
    if "per_seed" not in scores:
        return metrics.flat_scores(scores, class_names)
    flats = [metrics.flat_scores(s, class_names) for s in scores["per_seed"]]
    return expand({k: [f[k] for f in flats] for k in flats[0]}, scores["seeds"])


def format_table(scores: dict, class_names) -> str:
    """metrics.format_table, or for several seeds: metric, mean +- CI half-width, std, the
    95 % interval and each seed's value, one row per metric of metrics.jsonl."""
    if "per_seed" not in scores:
        return metrics.format_table(scores, class_names)
    flat, seeds = flat_scores(scores, class_names), scores["seeds"]
    names = [k for k in flat if f"{k}/std" in flat]
    width = max(len(k) for k in names)
    head = f"{'metric':<{width}}  {'mean':>8} {'± 95% CI':>9} {'std':>8}  {'95% CI':>19}"
    lines = [head + "".join(f"  {f'seed {s}':>8}" for s in seeds)]
    for k in names:
        low, high = flat[f"{k}/ci95_low"], flat[f"{k}/ci95_high"]
        values = "".join(f"  {flat[f'{k}/seed{s}']:8.4f}" for s in seeds)
        lines.append(
            f"{k:<{width}}  {flat[k]:8.4f} {(high - low) / 2:9.4f} {flat[f'{k}/std']:8.4f}"
            f"  [{low:8.4f}, {high:8.4f}]{values}"
        )
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))}):\n" + "\n".join(lines)
