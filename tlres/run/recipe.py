"""Options beyond the paper that change which weights train and which are evaluated.

--ema: Keras' optimizer EMA (`use_ema`). The optimizer keeps the average beside the weights (so
a checkpoint, which holds every optimizer variable, carries it); `averaged_weights` puts it in the
model for the per-epoch and final evaluation and for model.keras, as timm evaluates its EMA model.
BatchNorm's moving statistics are non-trainable, so Keras does not average them: the averaged
weights are evaluated with the raw model's statistics.

--freeze-backbone-epochs K: the head alone trains the first K epochs, then every layer
(`set_phase`). --warmup-epochs is a schedule: `tlres.run.schedules.Warmup`.
"""

import contextlib

from tlres.core.errors import plural
from tlres.core.config import randaugment_ops
from tlres.net import model as model_lib


def evaluated_weights(cfg):
    """Which weights the run evaluates and saves (config.json, metrics.json): "ema" or "trained"."""
    return "ema" if cfg.ema else "trained"


def options_line(cfg, steps):
    """The options beyond the paper this run has on, in words (printed once at its start), or None."""
    parts = []
    if cfg.warmup_epochs:
        parts.append(f"linear warmup over {plural(cfg.warmup_epochs, 'epoch')} "
                     f"({plural(cfg.warmup_epochs * steps, 'step')}) into {cfg.schedule}")
    if cfg.ema:
        parts.append(f"EMA of the weights (decay {cfg.ema:g}): the evaluations, predictions.csv and "
                     "model.keras use the averaged weights, training the raw ones")
    if cfg.freeze_backbone_epochs:
        parts.append(f"the head alone for {plural(cfg.freeze_backbone_epochs, 'epoch')} (backbone and "
                     "its BatchNorm statistics frozen), then every layer")
    if cfg.randaugment:
        n, m = randaugment_ops(cfg.randaugment)
        parts.append(f"RandAugment, {plural(n, 'operation')} per image at magnitude {m} of 30")
    mixing = [f"{name} (alpha {alpha:g})" for name, alpha in (("MixUp", cfg.mixup), ("CutMix", cfg.cutmix))
              if alpha]
    if mixing:
        parts.append(" or ".join(mixing) + (", one per batch" if len(mixing) == 2 else "")
                     + ": soft labels, training accuracy against their largest weight")
    return "options beyond the paper: " + "; ".join(parts) if parts else None


def ema_arguments(cfg):
    """The Keras optimizer's EMA arguments for --ema: averaged every step, never written over the
    weights while training ({} without --ema)."""
    return dict(use_ema=True, ema_momentum=cfg.ema, ema_overwrite_frequency=None) if cfg.ema else {}


def keep_trained_weights(optimizer):
    """`optimizer`, whose `finalize_variable_values` (which `fit` calls at its end and, with EMA,
    writes the averages over the weights) leaves the weights as they trained: a run fits in
    phases (a mid-epoch resume, the head-first switch), and each must go on from the raw weights;
    `averaged_weights` puts the averages in where they are evaluated and saved."""
    if getattr(optimizer, "use_ema", False):
        optimizer.finalize_variable_values = lambda var_list: None
    return optimizer


def ema_pairs(optimizer):
    """[(model variable, its average)] of an optimizer with EMA on, else []: the attributes Keras'
    own `keras.callbacks.SwapEMAWeights` reads."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(optimizer, "use_ema", False) or not optimizer.built:
        return []
    return [(v, a) for v, a in zip(optimizer._trainable_variables,
                                   optimizer._model_variables_moving_average) if a is not None]


@contextlib.contextmanager
def averaged_weights(net):
    """`net` holds its optimizer's averaged weights inside the block and its trained ones after;
    without EMA, nothing changes. Inside `fit`, JAX's training state is synced into the model
    first, and the swap never reaches that state, so training goes on with the raw weights."""
    from keras import ops

    pairs = ema_pairs(net.optimizer)
    if not pairs:
        yield
        return
    sync = getattr(net, "jax_state_sync", None)
    if sync is not None:
        sync()
    raw = [v.value for v, _ in pairs]
    try:
        for v, average in pairs:
            v.assign(ops.copy(average.value))
        yield
    finally:
        for (v, _), value in zip(pairs, raw):
            v.assign(value)


def frozen_at(cfg, epochs_done, step, steps):
    """Whether the run is in its head-alone phase at this position (a checkpoint's, or 0 for a new
    run): up to and including the end of epoch K, whose checkpoint that phase writes."""
    k = cfg.freeze_backbone_epochs
    return k > 0 and epochs_done * steps + step <= k * steps


def split_phases(phases, k):
    """The fit phases [(first epoch, end epoch, steps to skip)] cut at epoch `k` (0: unchanged)."""
    out = []
    for first, end, skip in phases:
        if first < k < end:
            out += [(first, k, skip), (k, end, 0)]
        else:
            out.append((first, end, skip))
    return out


def set_phase(net, frozen, recompile):
    """Train the head alone (`frozen`) or every layer from here on; nothing if it already does.

    The backbone's layers become (non-)trainable, so frozen BatchNorm runs in inference mode and
    its statistics stay; `recompile()` compiles `net` with a fresh optimizer, built here over
    exactly the variables that train (Keras' JAX trainer applies gradients through
    `stateless_apply`, which takes every variable the optimizer was built with), and given the
    old optimizer's state by name: the step (so the schedule runs on), the head's slots and
    averages. A variable new to it starts as an optimizer over every variable would have it:
    zero slots, and an average equal to itself (it has not moved since the first step).
    """
    from keras import ops  # each value copied: two variables on one buffer cannot both be donated

    backbone = model_lib.backbone(net)
    if backbone.trainable != frozen:
        return
    old = net.optimizer
    backbone.trainable = not frozen
    recompile()
    new = net.optimizer
    new.build(net.trainable_variables)
    values = {_in_optimizer(v): v.value for v in old.variables}
    own = {id(average): v for v, average in ema_pairs(new)}
    for v in new.variables:
        if _in_optimizer(v) in values:
            v.assign(ops.copy(values[_in_optimizer(v)]))
        elif id(v) in own:
            v.assign(ops.copy(own[id(v)].value))


def _in_optimizer(variable):
    """An optimizer variable's path without the optimizer's name (sgd, sgd_1: unique per process)."""
    return variable.path.split("/", 1)[-1]
