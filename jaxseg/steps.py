"""Pure train and eval steps. train.py binds model and optimizer and jits them once."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxseg import augment as augment_lib
from jaxseg import inference, losses, metrics
from jaxseg.data.augment_spec import AugmentSpec
from jaxseg.inference import normalize
from jaxseg.state import TrainState


def _loss_options(loss_terms, loss_options, batch) -> dict:
    """{loss name: keyword options}: the configured ones, and the batch's distance maps for
    the losses that take them (the boundary loss)."""
    options = {name: {} for name, _ in loss_terms} | {n: dict(p) for n, p in loss_options}
    for name, kwargs in options.items():
        if losses.takes(name, "distance"):
            kwargs["distance"] = batch.get("distance")
    return options


def _plus_aux(loss, head_loss, shape, aux: dict, aux_weights) -> jax.Array:
    """loss plus each auxiliary head's head_loss scaled by its weight, its logits upsampled
    (bilinear) to the main logits' shape where a head sits on a coarser stage."""
    for name, weight in aux_weights:
        if name not in aux:
            raise KeyError(f"loss.aux_weights names {name!r}; the model's aux: {sorted(aux)}")
        aux_logits = aux[name]
        if aux_logits.shape != shape:
            aux_logits = jax.image.resize(aux_logits, shape, "bilinear")
        loss = loss + weight * head_loss(aux_logits.astype(jnp.float32))
    return loss


def _split_rows(batch: dict, sharding) -> dict:
    """Every [B,H,...] array of the batch constrained to sharding; [B] and [B,K] ones kept."""
    return {
        k: jax.lax.with_sharding_constraint(v, sharding) if v.ndim >= 3 else v
        for k, v in batch.items()
    }


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mean,
    std,
    loss_terms: tuple[tuple[str, float], ...] = (("ce", 1.0),),
    aux_weights: tuple[tuple[str, float], ...] = (),
    ignore_index: int = 255,
    class_weights=None,
    loss_options: tuple[tuple[str, tuple], ...] = (),
    keep_stats_if_nonfinite: bool = False,
    augment: AugmentSpec | None = None,
    spatial_sharding=None,
) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch.

    batch: {"image": u8[B,H,W,C], "mask": i32[B,H,W]} (and "distance": f32[B,H,W,K] for the
    boundary loss). rng is folded with the step: a resumed run draws the same randomness.
    BatchNorm statistics are over the global batch (under jit it is one array).

    loss_terms: (name, weight) pairs of jaxseg.losses.LOSSES, summed; loss_options:
    (name, ((keyword, value), ...)) pairs of their options.
    aux_weights: (aux output name, weight) pairs: each auxiliary head's logits (upsampled to
    the input size) get the same loss terms, scaled by the weight.
    keep_stats_if_nonfinite: a non-finite step keeps the old BatchNorm statistics too.
    augment: the batch is the padded canvas of augment.backend="device" ({"image":
    u8[B,Hc,Wc,C], "mask": int[B,Hc,Wc], "size": i32[B,2]}), augmented here first.
    spatial_sharding: [B,H,...] over ("data", "spatial") (jaxseg.sharding.spatial_sharding):
    the crops' rows split over devices, and XLA's partitioner splits every activation alike.
    Returns the new state and scalar metrics {"loss", "grad_norm", "lr", "finite"}.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    if augment is not None:
        batch = augment_lib.augment_batch(jax.random.fold_in(dropout_rng, 1), batch, augment)
    if spatial_sharding is not None:  # after augmentation, which may move rows across H
        batch = _split_rows(batch, spatial_sharding)
    images = normalize(batch["image"], mean, std)

    def head_loss(logits):
        return losses.combined_loss(
            logits,
            batch["mask"],
            dict(loss_terms),
            ignore_index=ignore_index,
            class_weights=class_weights,
            options=_loss_options(loss_terms, loss_options, batch),
        )

    def loss_fn(params):
        (logits, aux), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_rng},
        )
        loss = _plus_aux(head_loss(logits), head_loss, logits.shape, aux, aux_weights)
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if keep_stats_if_nonfinite:
        batch_stats = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), batch_stats, state.batch_stats
        )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    # "finite" is read by the host at the log cadence and before saves: no per-step sync.
    return new_state, dict(loss=loss, grad_norm=grad_norm, lr=schedule(state.step), finite=finite)


def eval_step(
    variables: dict,
    batch: dict,
    totals: dict,
    *,
    model: nn.Module,
    num_classes: int,
    mean,
    std,
    ignore_index: int = 255,
    boundary_tolerance: int = 3,
    settings: inference.Settings | None = None,
    window_sharding=None,
) -> dict:
    """Adds this batch's counts to `totals` (see jaxseg.metrics and empty_totals).

    variables: {"params", "batch_stats"}. batch: {"image": u8[B,H,W,C], "mask": i32[B,H,W],
    "valid": bool[B], "size": i32[B,2]}; padded examples (valid False), ignored pixels and
    the padding beyond each example's size are not counted. Predictions come from
    jaxseg.inference.scores with `settings` (whole, slide, TTA).
    """
    settings = inference.Settings() if settings is None else settings
    scores = inference.scores(
        variables,
        batch["image"],
        batch.get("size"),
        model=model,
        mean=mean,
        std=std,
        settings=settings,
        window_sharding=window_sharding,  # slide mode splits its windows with it
    )
    labels = jnp.where(batch["valid"][:, None, None], batch["mask"], ignore_index)
    preds = inference.labels(scores)
    counts = {
        "confusion": metrics.confusion_matrix(
            labels, preds, num_classes, ignore_index=ignore_index
        ),
        "boundary": metrics.boundary_counts(
            labels, preds, num_classes, ignore_index=ignore_index, tolerance=boundary_tolerance
        ),
        "calibration": metrics.calibration_counts(
            scores, labels, ignore_index=ignore_index, num_bins=totals["calibration"].shape[1]
        ),
    }
    return jax.tree.map(jnp.add, totals, counts)


def empty_totals(num_classes: int, calibration_bins: int = 15) -> dict:
    """Zero accumulators for eval_step: confusion i32[K,K], boundary i32[2,K],
    calibration f32[K,bins,3]."""
    return {
        "confusion": jnp.zeros((num_classes, num_classes), jnp.int32),
        "boundary": jnp.zeros((2, num_classes), jnp.int32),
        "calibration": jnp.zeros((num_classes, calibration_bins, 3), jnp.float32),
    }
