"""Which GPU a machine offers, and through which array library: TensorFlow where it sees one (users' clusters),
else PyTorch, JAX or CuPy (the lent H200 machine has those but no TensorFlow). scaleout.bench.gpu searches on it."""

from __future__ import annotations

import importlib.util


def _present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def detect() -> tuple[str | None, dict]:
    """(backend name or None, what was found per library): the first library that sees a GPU."""
    found = {}
    if _present("tensorflow"):
        from scaleout.tfenv import tf

        gpus = tf.config.list_physical_devices("GPU")
        found["tensorflow"] = f"{len(gpus)} GPU(s)"
        if gpus:
            return "tensorflow", found
    else:
        found["tensorflow"] = "not installed"
    if _present("torch"):
        import torch

        found["torch"] = f"cuda available: {torch.cuda.is_available()}"
        if torch.cuda.is_available():
            return "torch", found
    else:
        found["torch"] = "not installed"
    if _present("jax"):
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        found["jax"] = f"{len(gpus)} GPU(s)"
        if gpus:
            return "jax", found
    else:
        found["jax"] = "not installed"
    if _present("cupy"):
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver / no device
            count, found["cupy"] = 0, f"no device ({exc})"
        else:
            found["cupy"] = f"{count} device(s)"
        if count:
            return "cupy", found
    else:
        found["cupy"] = "not installed"
    return None, found


CPU_CHECK = "harness check only, not a GPU result"


def device_name(backend: str, on_cpu: bool = False) -> str:
    if on_cpu:
        return f"CPU ({backend}, {CPU_CHECK})"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0)
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend == "cupy":
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    from scaleout.tfenv import tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
