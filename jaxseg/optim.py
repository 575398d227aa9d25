"""Optimizer: learning-rate schedule with linear warmup, SGD or AdamW, decay mask, clipping."""

from __future__ import annotations

import jax
import optax

from jaxseg.configs import ConfigError


def make_schedule(
    name: str,
    lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    poly_power: float = 0.9,
    end_lr: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from 0 to lr over warmup_steps, then poly, cosine or constant."""
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "poly":
        decay = optax.polynomial_schedule(lr, end_lr, poly_power, decay_steps)
    elif name == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr / lr if lr else 0.0)
    elif name == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown schedule {name!r}; valid: constant, cosine, poly")
    if warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params) -> dict:
    """True for conv/dense kernels; False for biases and BatchNorm scales and offsets."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def head_mask(params) -> dict:
    """True for every parameter outside the top-level "backbone" subtree. A model whose
    parameters have no such subtree (bisenetv1's context path, for one) is refused: the
    multiplier would otherwise scale every parameter."""
    if "backbone" not in params:
        raise ConfigError(
            "optim.head_lr_mult is set but the model's parameters have no 'backbone' subtree "
            f"(top level: {', '.join(sorted(params)[:8])})"
        )
    return {k: jax.tree.map(lambda _, k=k: k != "backbone", v) for k, v in params.items()}


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    weight_decay: float = 0.0,
    grad_clip: float = 0.0,
    skip_nonfinite: int = 0,
    head_lr_mult: float = 1.0,
    accumulate_steps: int = 1,
) -> optax.GradientTransformation:
    """SGD (L2 weight decay added to the gradient, as in torch.optim.SGD) or AdamW.

    skip_nonfinite > 0: updates from non-finite gradients are skipped (optax.apply_if_finite),
    up to that many in a row; the next one would be applied, so the trainer stops first.

    head_lr_mult: the updates of parameters outside "backbone" are scaled by it, the same as
    a learning rate that many times larger for them (weight decay included, as torch's
    per-group lr), since SGD-momentum and AdamW updates are linear in the learning rate.
    accumulate_steps > 1: optax.MultiSteps applies one update per accumulate_steps calls,
    from the mean gradient; its state (accumulated gradient, micro-step counter) is part of
    the optimizer state, so checkpoints carry it and resume is exact. `schedule` is then
    evaluated at the update count (the inner optimizer's step), not the call count."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    if name == "sgd":
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov))
    elif name == "adamw":
        parts.append(
            optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask)
        )
    else:
        raise ValueError(f"unknown optimizer {name!r}; valid: adamw, sgd")
    if head_lr_mult != 1.0:
        parts.append(optax.masked(optax.scale(head_lr_mult), head_mask))
    tx = optax.chain(*parts)
    tx = optax.apply_if_finite(tx, skip_nonfinite) if skip_nonfinite > 0 else tx
    return optax.MultiSteps(tx, accumulate_steps) if accumulate_steps > 1 else tx
