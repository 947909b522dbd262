"""`--conv`: which kernel each Conv2D (and MaxPooling2D) of a model runs, and the record of it.

'xla' is Keras' own layers (cuDNN on a GPU); 'matmul' gives each Conv2D `kernels.matmul_conv`
and each MaxPooling2D `kernels.slice_max_pool`; 'auto' on a CPU times both on each part of each
distinct convolution (forward, input gradient, weight gradient: `tlres.net.cpu.convplan`, with
`time_conv`) and keeps the faster per part (`kernels.conv`). Why XLA:CPU
needs this, with the figures: docs/speed.md#how---conv-auto-chooses-the-kernels-on-a-cpu.
`apply_conv` returns its record and leaves it on the model (`CHOICE`), where
`conv_plan_record` reads it back for config.json and the bench.
"""

import functools
import time
import types

import numpy as np

from tlres.net.cpu import convplan, kernels

CHOICE = "tlres_conv_choice"  # the model attribute holding how `apply_conv` chose (read-only)


def resolve_conv(conv):
    """'auto' -> 'measure' when JAX computes on the CPU (per-layer plan timed on the host; or
    the kernel TLRES_CONV_AUTO names), else 'xla' (cuDNN on a GPU); 'xla'/'matmul' as given."""
    if conv != "auto":
        return conv
    import jax

    if jax.default_backend() != "cpu":
        return "xla"
    if jax.process_count() > 1:  # every process must compile the same program; timings can differ
        return convplan.env_rule() or "matmul"
    return convplan.env_rule() or "measure"


def all_layers(model):
    """Every layer of `model`, nested models included, in order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def conv2d_layers(model):
    """The plain Conv2D layers of `model`, nested models included, in order."""
    import keras

    return [l for l in all_layers(model) if type(l) is keras.layers.Conv2D]


def slice_pool_able(layer):
    return layer.padding == "valid" and layer.data_format == "channels_last"


def matmul_able(layer):
    """Whether `kernels.matmul_conv` computes this Conv2D (all of tlres' do)."""
    return (layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
            and getattr(layer, "groups", 1) == 1)


def _slice_pool_call(layer, x):
    return kernels.slice_max_pool(x, layer.pool_size, layer.strides)


def _conv_op(layer, parts, x, kernel):
    return kernels.conv(x, kernel, layer.strides, layer.padding, parts)


def layer_parts(layer):
    """The kernel of each of `kernels.PARTS` this Conv2D runs: `kernels.every_part("xla")` for Keras' own."""
    op = vars(layer).get("convolution_op")
    return op.args[1] if isinstance(op, functools.partial) else kernels.every_part("xla")


def use_slice_pools(model, on=True):
    """Give the MaxPooling2D layers of `model` `kernels.slice_max_pool` (or, `on=False`, Keras' own);
    weights, names and files are unchanged. Returns how many use it.

    The kernel is an instance attribute (`call`): a subclass would change the class a model
    file names, and patching Keras' class would change every model in the process."""
    import keras

    count = 0
    for layer in all_layers(model):
        if type(layer) is not keras.layers.MaxPooling2D:
            continue
        if on and slice_pool_able(layer):
            layer.call = functools.partial(_slice_pool_call, layer)
            count += 1
        else:
            vars(layer).pop("call", None)
    return count


def use_matmul_convs(model, layers=None):
    """Give the Conv2D layers of `model` (nested models included; or just `layers`) the
    `kernels.matmul_conv` kernel, and every other Conv2D of `model` XLA's own."""
    chosen = None if layers is None else {id(l) for l in layers}
    return use_conv_parts(model, {l.name: kernels.every_part("matmul") for l in conv2d_layers(model)
                                  if chosen is None or id(l) in chosen})


def use_conv_parts(model, parts):
    """Give each Conv2D of `model` named in `parts` ({layer name: kernel per part of
    `kernels.PARTS`}) `kernels.conv` with those kernels, and every other Conv2D XLA's own.

    Only the computation changes (the instance's `convolution_op`, as `use_slice_pools`):
    layers keep their weights, names, configs and saved format, so every file loads as before.
    """
    for layer in conv2d_layers(model):
        chosen = tuple(parts.get(layer.name, kernels.every_part("xla")))
        if matmul_able(layer) and chosen != kernels.every_part("xla"):
            layer.convolution_op = functools.partial(_conv_op, layer, chosen)
        else:
            vars(layer).pop("convolution_op", None)  # back to the class' (XLA's) kernel
    return model


def conv_shape(layer, batch_size):
    """The distinct-convolution description `tlres.net.cpu.convplan` keys and times: batch, input,
    kernel, filters, strides, padding, compute dtype."""
    _, h, w, c = layer.input.shape
    return {"batch": int(batch_size), "input": [int(h), int(w), int(c)],
            "kernel": [int(k) for k in layer.kernel_size], "filters": int(layer.filters),
            "strides": [int(s) for s in layer.strides], "padding": layer.padding,
            "dtype": str(layer.compute_dtype)}


def time_conv(shape, kernel, repeats):
    """{part: seconds per call, `repeats` calls} of one convolution in one kernel, for each of
    `kernels.PARTS` (the forward pass, the gradient of the input, of the weights), each jitted
    alone and timed after its compiling call and one more: the measurement behind `--conv auto`."""
    import jax
    import jax.numpy as jnp

    b, (h, w, c), (kh, kw) = shape["batch"], shape["input"], shape["kernel"]
    strides, padding = tuple(shape["strides"]), shape["padding"]
    rng = np.random.default_rng(0)  # numpy: no compilation per shape for the data
    x = jnp.asarray(rng.standard_normal((b, h, w, c), "float32"), shape["dtype"])
    k = jnp.asarray(rng.standard_normal((kh, kw, c, shape["filters"]), "float32") * 0.05, shape["dtype"])
    form = kernels.matmul_conv if kernel == "matmul" else kernels.xla_conv

    def conv(x, k):
        return form(x, k, strides, padding)

    g = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, k).shape, "float32"), shape["dtype"])
    calls = {"forward": (jax.jit(conv), (x, k)),
             "input_grad": (jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0]), (x, k, g)),
             "weight_grad": (jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0]), (x, k, g))}
    out = {}
    for part, (fn, args) in calls.items():
        for _ in range(2):  # compiles, then one untimed call
            jax.block_until_ready(fn(*args))
        out[part] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            out[part].append(time.perf_counter() - t0)
    return out


def _measured(layers, batch_size, time_fn, cache_dir):
    """'auto' on a CPU: ({layer name: kernel per part} of the host's timed plan, the record)."""
    able = [l for l in layers if matmul_able(l)]
    shapes = [conv_shape(l, batch_size) for l in able]
    keys = [convplan.shape_key(s) for s in shapes]
    p = convplan.plan(shapes, time_fn or time_conv, cache_dir)
    record = {"source": p["source"], "cache_file": p["cache_file"], "measured_now": p["measured_now"],
              "shapes": {k: {**e, "layers": [l.name for l, lk in zip(able, keys) if lk == k]}
                         for k, e in p["shapes"].items()}}
    return {l.name: p["kernels"][k] for l, k in zip(able, keys)}, record


def _rule_source(conv, kind):
    """Why every convolution got `kind` without timing: the flag, the device or the environment."""
    if conv != "auto":
        return f"--conv {conv}"
    import jax

    if jax.default_backend() != "cpu":
        return f"XLA's kernel on {jax.default_backend()}"
    if convplan.env_rule():
        return f"{convplan.ENV}={kind}"
    return "several processes: the matmul form in every one (a plan timed in each could differ)"


def _keep(model, choice):
    """Leave how the kernels were chosen on `model` (read-only) and return its full record."""
    setattr(model, CHOICE, types.MappingProxyType(choice))
    return conv_plan_record(model)


def apply_conv(model, conv, batch_size, cache_dir=None, time_fn=None):
    """Give each Conv2D of `model` the kernel `conv` ('auto', 'xla', 'matmul') means here, and
    return the record of it (`conv_plan_record`).

    'auto' on a CPU: per distinct convolution shape at `batch_size` and per part of its work, the
    faster kernel as timed on this host (`tlres.net.cpu.convplan.plan` with `time_fn`, default
    `time_conv`; cached in `cache_dir`, default beside the compile cache).
    """
    kind = resolve_conv(conv)
    layers = conv2d_layers(model)
    choice = {"conv": conv, "resolved": kind}
    if kind == "measure":
        parts, measured = _measured(layers, batch_size, time_fn, cache_dir)
        choice.update(measured)
    else:
        parts = {l.name: kernels.every_part(kind) for l in layers}
        choice["source"] = _rule_source(conv, kind)
    use_conv_parts(model, parts)
    choice["slice_max_pools"] = use_slice_pools(model, kind != "xla")
    return _keep(model, choice)


def apply_recorded_plan(model, record):
    """Give `model` the kernels a run's `config.json` recorded (`conv_plan`) when they came from
    the host's timed plan (--conv auto on a CPU), so a resumed run keeps the kernels it started
    with even if the plan cache changed since; any other record changes nothing (None)."""
    if not isinstance(record, dict) or record.get("resolved") != "measure":
        return None
    names, mixed = record.get("matmul_layers"), record.get("mixed_layers", {})
    layers = {l.name for l in conv2d_layers(model)}
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or not set(names) <= layers or not isinstance(mixed, dict) or not set(mixed) <= layers \
            or not all(isinstance(p, list) and len(p) == len(kernels.PARTS)
                       and set(p) <= set(kernels.FORMS) for p in mixed.values()):
        return None
    use_conv_parts(model, {**{n: kernels.every_part("matmul") for n in names},
                           **{n: tuple(p) for n, p in mixed.items()}})
    pools = use_slice_pools(model)
    kept = {k: v for k, v in record.items()
            if k not in ("matmul_layers", "xla_layers", "mixed_layers", "summary")}
    return _keep(model, {**kept, "source": "recorded (the run's config.json)", "slice_max_pools": pools})


def conv_plan_record(model):
    """Which of `model`'s convolutions use which kernel (as they are now: `matmul_layers`,
    `xla_layers`, and `mixed_layers` {name: kernel per part of `kernels.PARTS`}), and how
    `apply_conv` chose them: --conv, the rule or (auto on a CPU) the timings per distinct shape
    and whether they were measured now or read from the cache. For config.json and the bench."""
    parts = {l.name: layer_parts(l) for l in conv2d_layers(model)}
    return {**getattr(model, CHOICE, {}), "summary": conv_plan(model),
            "matmul_layers": [n for n, p in parts.items() if set(p) == {"matmul"}],
            "xla_layers": [n for n, p in parts.items() if set(p) == {"xla"}],
            "mixed_layers": {n: list(p) for n, p in parts.items() if len(set(p)) > 1}}


def conv_plan(model):
    """E.g. 'matmul 53/53', or 'matmul 41/53, mixed 9/53': how many of the model's Conv2D layers
    use `kernels.matmul_conv` for every part, and how many for some parts only."""
    parts = [set(layer_parts(l)) for l in conv2d_layers(model)]
    mixed = sum(len(p) > 1 for p in parts)
    return f"matmul {sum(p == {'matmul'} for p in parts)}/{len(parts)}" + (
        f", mixed {mixed}/{len(parts)}" if mixed else "")
