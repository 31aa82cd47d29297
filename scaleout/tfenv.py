"""TensorFlow with Keras 2, checked: the one way scaleout imports TensorFlow.

``from scaleout.tfenv import tf, tfrs`` gives TensorFlow and TensorFlow
Recommenders, imported on first use (PEP 562 module attributes), so a module
that names them does not load TensorFlow until it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os

# TensorFlow's CPU tensors from its BFC allocator, which keeps the memory it frees for the next step, instead of
# malloc, which hands a tensor above 32 MiB (the B x B logits of a batch of 4,096 and more) back to the system
# and faults it in again next step, page by page. The tutorial's batch of 8,192 trains about 1.8x faster with it
# here (benchmarks/cpu_allocator.py); the process keeps its peak of tensor memory. Set it to false to go back.
ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"
os.environ.setdefault(ALLOCATOR, "true")

# Environment every process running scaleout code needs (Ray runtime_env): Keras 2, and this process's allocator
# setting. TF_CPP_MIN_LOG_LEVEL is left to each process (below, when it imports scaleout): a worker on a GPU-less
# node quiets TensorFlow's cuInit error there, one on a GPU node keeps its errors, whatever the driver's node has.
RUNTIME_ENV_VARS = {"TF_USE_LEGACY_KERAS": "1", ALLOCATOR: os.environ[ALLOCATOR]}

NVIDIA_DEVICES = ("/dev/nvidiactl", "/proc/driver/nvidia")


def has_nvidia_device() -> bool:
    """Whether this machine has an NVIDIA driver loaded (its control device or its /proc entry)."""
    return any(os.path.exists(p) for p in NVIDIA_DEVICES)


# TensorFlow's C++ log: warnings and info off. On a machine without an NVIDIA device its errors go too: the one it
# writes there on every start is "failed call to cuInit", about the GPU that is not there (errors that matter reach
# Python as exceptions). Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_device() else "3")


def import_tensorflow():
    """Returns the ``tensorflow`` module after checking ``tf.keras`` is Keras 2.

    Raises RuntimeError when Keras 3 was loaded anyway, which happens when
    TensorFlow touched ``tf.keras`` before ``TF_USE_LEGACY_KERAS=1`` was set
    (for example a process that imported tensorflow before scaleout).
    """
    import tensorflow as tf

    keras_module = tf.keras.__name__
    if not keras_module.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras resolved to {keras_module} (Keras 3), but tensorflow-recommenders needs Keras 2 "
            "(tf_keras). Set TF_USE_LEGACY_KERAS=1 in the environment before TensorFlow is imported, "
            "or import scaleout before tensorflow; Ray workers need it in runtime_env env_vars."
        )
    return tf


def bfc_setting(value: str | None) -> bool:
    """``TF_CPU_ALLOCATOR_USE_BFC`` as TensorFlow reads it (``ReadBoolFromEnvVar``): "1" or "true" (any case) is
    BFC; unset, "0", "false" or anything else (an error TensorFlow logs) is malloc."""
    return (value or "").lower() in ("1", "true")


STARTING_SETTING = os.environ[ALLOCATOR]  # what this process's TensorFlow reads when it starts its CPU device


def cpu_allocator() -> str:
    """The allocator TensorFlow's CPU tensors come from in this process: "bfc" or "malloc". Starts TensorFlow's
    CPU device. malloc's allocator counts nothing where its statistics are off: there a CPU device without
    memory statistics is malloc's whatever the setting said. Where they are on (on this project's CI machine on
    2026-12-02 they were, for malloc as for BFC, in a process that imported TensorFlow alone), the setting
    TensorFlow read decides: the variable as it was when
    scaleout was imported, before TensorFlow started (scaleout must be imported first)."""
    tf = import_tensorflow()
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "... not supported for this device"
        return "malloc"
    return "bfc" if bfc_setting(STARTING_SETTING) else "malloc"


def profiler_trace(data: bytes):
    """A TensorFlow profiler trace (a ``*.xplane.pb`` file's bytes) as its XSpace message."""
    import_tensorflow()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(data)
    return space


def __getattr__(name: str):
    if name == "tf":
        return import_tensorflow()
    if name == "tfrs":
        import_tensorflow()  # Keras 2 checked before TFRS binds tf.keras
        import tensorflow_recommenders

        return tensorflow_recommenders
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What TensorFlow and Keras log while saving a SavedModel, none of it about the user's run: Keras "builds" the
# compiled metrics of towers that are never compiled (and warns that it could not), lists the assets directory,
# and says which captured inputs it renamed.
SAVE_NOISE = ("Compiled the loaded model, but the compiled metrics have yet to be built",
              "Assets written to:", "contains input name(s)")


class _DropSaveNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in SAVE_NOISE)


@contextlib.contextmanager
def quiet_saving():
    """Drops TensorFlow's and Keras' log lines about saving (``SAVE_NOISE``) for the duration; others pass."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]  # Keras logs to the first, TF's saver
    noise = _DropSaveNoise()                                                 # through absl to the second
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)
