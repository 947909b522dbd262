"""What a run records about where it ran: package versions, the device, the host.

config.json's "versions" and "device" (`tlres.run.train`, `tlres.reference.torch`) and the
bench's records (`tlres.reference.bench`) come from here.
"""

import sys
from importlib import metadata

from tlres.net.cpu import allocator
from tlres.net.backend import cpu_features, cpu_name, host_description

PACKAGES = {
    "keras-jax": ("tlres", "keras", "jax", "jaxlib", "numpy", "tensorflow-cpu", "tensorflow",
                  "tensorflow-datasets"),
    "pytorch": ("tlres", "torch", "torchvision", "numpy"),
}
"""The packages config.json's "versions" records, per framework (those installed)."""


def versions(framework="keras-jax"):
    """Python's version and each installed package of `framework` (`PACKAGES`)."""
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES[framework]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device():
    """The devices JAX trains on, and the host CPU (it runs the tf.data pipeline; on CPU, the model)."""
    import jax

    devs = jax.devices()  # every process' devices
    return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs),
            "processes": jax.process_count(),
            "host": host_description(), "cpu": cpu_name(), "vector_extensions": cpu_features(),
            "allocator": allocator.describe()}


def torch_device(dev):
    """The PyTorch reference's record of the torch device `dev` it trains on."""
    import torch

    if dev.type == "cuda":
        return {"platform": "cuda", "kind": torch.cuda.get_device_name(dev), "count": 1}
    return {"platform": "cpu", "kind": cpu_name(), "count": 1, "threads": torch.get_num_threads(),
            "host": host_description(), "vector_extensions": cpu_features(),
            "allocator": allocator.describe()}
