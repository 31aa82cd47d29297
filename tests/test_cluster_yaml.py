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


def node_configs():
    return {name: t["node_config"] for name, t in yaml.safe_load(TEXT)["available_node_types"].items()}


def start_commands():
    config = yaml.safe_load(TEXT)
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]


def test_the_bucket_is_named_once_and_reached_without_credentials_in_files():
    config = yaml.safe_load(TEXT)
    settings = [o for o in config["docker"]["run_options"] if "SCALEOUT_BUCKET=" in o]
    assert len(settings) == 1 and TEXT.count("SCALEOUT_BUCKET=") == 1
    assert not re.search(r"s3://(?!\$SCALEOUT_BUCKET)", TEXT)  # no other bucket named anywhere
    for name, node in node_configs().items():
        assert node["IamInstanceProfile"] == {"Name": "scaleout-nodes"}, name
        # IMDSv2, reachable from the container: how the SDKs in it get the profile's credentials.
        assert node["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 2}, name
    assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID", TEXT,
                         re.IGNORECASE)
    assert not any(".aws" in str(k) + str(v) for k, v in config["file_mounts"].items())


def test_the_dashboard_and_job_server_listen_on_the_loopback_only():
    head = [c for c in start_commands() if "--head" in c]
    assert len(head) == 1 and "--dashboard-host=127.0.0.1" in head[0]
    assert "0.0.0.0" not in TEXT.replace("0.0.0.0/0", "")  # no listener on every interface
    assert "ray dashboard cluster.yaml" in TEXT


def test_ssh_is_limited_and_workers_have_no_public_ip():
    config = yaml.safe_load(TEXT)
    nodes = node_configs()
    # Every node type names its security group: Ray then creates none (its default opens SSH to 0.0.0.0/0).
    assert all(node.get("SecurityGroupIds") for node in nodes.values())
    assert "0.0.0.0/0" not in TEXT.replace("(never 0.0.0.0/0)", "").replace("opens SSH to everyone", "")
    assert "IpPermissions" not in str(config["provider"].get("security_group", {}))
    assert config["provider"]["use_internal_ips"] is True and config["provider"]["use_external_head_ip"] is True
    head_subnets = set(nodes["head"]["SubnetIds"])
    for name in ("cpu_worker", "gpu_worker"):
        assert nodes[name]["SubnetIds"] and not set(nodes[name]["SubnetIds"]) & head_subnets, name
    readme = (REPO / "README.md").read_text()
    assert '--cidr "$ADMIN_CIDR"' in readme  # the one SSH rule, from the user's CIDR


def test_every_ray_process_starts_with_token_authentication():
    config = yaml.safe_load(TEXT)
    commands = start_commands()
    assert len(commands) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in commands)
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
