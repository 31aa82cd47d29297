"""Which GPU a machine offers, and through which array library: TensorFlow where it sees one (users' clusters),
else PyTorch, JAX or CuPy (the lent H200 machine has those but no TensorFlow). scaleout.bench.gpu searches on it."""

from __future__ import annotations

import importlib.util


def _present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _tensorflow() -> tuple[int, str]:
    from scaleout.tfenv import tf

    count = len(tf.config.list_physical_devices("GPU"))
    return count, f"{count} GPU(s)"


def _torch() -> tuple[int, str]:
    import torch

    available = torch.cuda.is_available()
    return int(available), f"cuda available: {available}"


def _jax() -> tuple[int, str]:
    import jax

    count = sum(d.platform == "gpu" for d in jax.devices())
    return count, f"{count} GPU(s)"


def _cupy() -> tuple[int, str]:
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver / no device
        return 0, f"no device ({exc})"
    return count, f"{count} device(s)"


PROBES = {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax, "cupy": _cupy}  # in the order tried


def detect() -> tuple[str | None, dict]:
    """(backend name or None, what was found per library): the first library that sees a GPU."""
    found = {}
    for name, probe in PROBES.items():
        if not _present(name):
            found[name] = "not installed"
            continue
        count, found[name] = probe()
        if count:
            return name, found
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


def event_seconds(torch, fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of fn on the GPU by CUDA events (the kernels and launches between
    them; no wait of the host's), after one untimed call (compiles, caches, a graph's capture)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return times
