import os
import subprocess
import sys

import pytest

KERAS3_FIRST = """
import tensorflow as tf
tf.keras.layers  # resolves tf.keras to Keras 3: TF_USE_LEGACY_KERAS is not set yet
import scaleout
from scaleout.tfenv import import_tensorflow
import_tensorflow()
"""


def run(code, **env):
    base = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env})


def test_keras_3_loaded_first_fails_fast_with_the_reason():
    result = run(KERAS3_FIRST)
    assert result.returncode != 0
    assert "Keras 3" in result.stderr and "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_importing_scaleout_first_gives_keras_2():
    result = run("import scaleout\nfrom scaleout.tfenv import import_tensorflow\nprint(import_tensorflow().keras.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")


def test_an_explicit_keras_3_setting_is_refused():
    result = run("import scaleout", TF_USE_LEGACY_KERAS="0")
    assert result.returncode != 0 and "needs Keras 2" in result.stderr


def test_a_machine_without_a_gpu_hears_nothing_about_cuda():
    """The terminal shows scaleout's progress, not TensorFlow's start-up noise: without an NVIDIA device, no cuInit
    error line; with one, TensorFlow's errors stay on (level 2) so a broken GPU set-up is heard."""
    from scaleout.tfenv import has_nvidia_device

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import scaleout, os; from scaleout.tfenv import tf; tf.constant(1.0) + 1; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    if has_nvidia_device():
        assert result.stdout.strip() == "2"
    else:
        assert result.stdout.strip() == "3"
        assert "cuInit" not in result.stderr and "cuda" not in result.stderr.lower(), result.stderr[-2000:]


ALLOCATOR = """
import scaleout
from scaleout.tfenv import RUNTIME_ENV_VARS, cpu_allocator
print(cpu_allocator(), RUNTIME_ENV_VARS["TF_CPU_ALLOCATOR_USE_BFC"])
"""


def test_tensorflow_takes_its_bfc_allocator_unless_told_otherwise_and_passes_the_setting_on_to_ray():
    """CPU tensors come from TensorFlow's BFC allocator, which reuses what a step freed (malloc faults the large
    B x B tensors in again every step: benchmarks/cpu_allocator.py); a user's own setting wins, and it is what
    the runtime environment of Ray's workers carries (tests/test_ray_cluster.py reads what 2 workers used)."""
    base = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    chosen = subprocess.run([sys.executable, "-c", ALLOCATOR], capture_output=True, text=True, env=base)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert chosen.stdout.split() == ["bfc", "true"]
    refused = subprocess.run([sys.executable, "-c", ALLOCATOR], capture_output=True, text=True,
                             env={**base, "TF_CPU_ALLOCATOR_USE_BFC": "false"})
    assert refused.returncode == 0, refused.stderr[-2000:]
    assert refused.stdout.split() == ["malloc", "false"]


@pytest.mark.parametrize("value, bfc", [("true", True), ("TRUE", True), ("1", True),
                                        ("false", False), ("0", False), (None, False), ("", False), ("yes", False)])
def test_the_allocator_setting_is_read_as_tensorflow_reads_it(value, bfc):
    from scaleout.tfenv import bfc_setting

    assert bfc_setting(value) is bfc
