"""cluster.yaml passes Ray's own cluster-config validation, pins the Ray we pin, and says what
every key is for."""

import re
import sys

import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import REPO

TEXT = (REPO / "cluster.yaml").read_text()
KEY = re.compile(r"^\s*(?:- )?([A-Za-z_~/.][\w./~-]*):(?:\s|$)")


def test_ray_accepts_the_config():
    config = yaml.safe_load(TEXT)
    validate_config(prepare_config(config))  # what `ray up` runs before launching anything
    assert set(config["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1


def test_images_are_pinned_to_our_ray_and_python():
    config = yaml.safe_load(TEXT)
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    images = [config["docker"]["image"], config["available_node_types"]["gpu_worker"]["docker"]["worker_image"]]
    assert images == [f"rayproject/ray:{ray.__version__}-{py}-cpu", f"rayproject/ray:{ray.__version__}-{py}-gpu"]


def test_every_key_has_a_comment():
    lines = TEXT.splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        match = KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if "#" not in line and not previous.lstrip().startswith("#"):
            uncommented.append(f"line {i + 1}: {match.group(1)}")
    assert not uncommented, uncommented
