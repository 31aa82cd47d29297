"""Helpers of the tests whose script trains under two replicas on this machine's CPU: the two logical CPU devices
must be set up before TensorFlow starts, so each such script runs in a fresh Python after ``TWO_CPUS``."""

import json
import subprocess
import sys

TWO_CPUS = r"""
import scaleout
from scaleout.tfenv import import_tensorflow

tf = import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def run_on_two_cpus(script: str, *args: str, timeout: float = 600) -> dict:
    """``TWO_CPUS`` then ``script`` in a fresh Python with ``args``: the JSON of its last line of output, once it
    has exited 0."""
    result = subprocess.run([sys.executable, "-c", TWO_CPUS + script, *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
