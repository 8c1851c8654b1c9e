"""The job specs and cluster configs agree with the project: they parse, and name the same Ray, image and entrypoint."""

from __future__ import annotations

import re
import shlex
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from svdbatch.config import build_spec, load_spec, resolve_paths
from svdbatch.demo import demo_spec

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
IMAGE = "ghcr.io/svdbatch/svdbatch:0.1.0"


def _yaml(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


@pytest.mark.parametrize(
    "name", sorted(path.name for path in (ROOT / "jobs").glob("*.yaml") if path.name != "runtime_env.yaml")
)
def test_every_job_spec_validates(name):
    spec = load_spec(ROOT / "jobs" / name)
    assert spec.manifest.path and spec.output.url


def test_demo_job_matches_what_the_demo_command_runs():
    committed = load_spec(ROOT / "jobs" / "demo.yaml").model_dump()
    generated = build_spec(resolve_paths(demo_spec(), str(ROOT / "demo-output" / "job.yaml"))[0]).model_dump()
    assert committed == generated
    assert committed["manifest"]["path"] == str(ROOT / "demo-output" / "manifest.parquet")


def test_svd_xt_jobs_use_real_model_shapes():
    catalog = load_spec(ROOT / "jobs" / "svd-xt-catalog.yaml")
    assert (catalog.render.width, catalog.render.height, catalog.render.num_frames) == (1024, 576, 25)
    assert catalog.model.source == "stabilityai/stable-video-diffusion-img2vid-xt" and catalog.seeds.variants == 1
    assert catalog.output.url.startswith("s3://")
    augment = load_spec(ROOT / "jobs" / "svd-augment.yaml")
    assert augment.render.num_frames == 14 and augment.seeds.variants > 1 and len(augment.seeds.motion_sweep) > 1


def test_ray_version_is_the_same_everywhere():
    installed = version("ray")
    assert f"rayproject/ray:{installed}-" in _dockerfile()
    assert _yaml("raycluster.yaml")["spec"]["rayVersion"] == installed
    assert _yaml("rayjob.yaml")["spec"]["rayClusterSpec"]["rayVersion"] == installed


def test_torch_pin_in_the_image_matches_the_tested_one():
    pinned = re.search(r"torch==([\d.]+)", _dockerfile()).group(1)
    assert version("torch").split("+")[0] == pinned


def _groups(cluster_spec: dict) -> tuple[dict, list[dict]]:
    return cluster_spec["headGroupSpec"], cluster_spec["workerGroupSpecs"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_head_is_cpu_only_and_workers_have_one_gpu_each(name):
    document = _yaml(name)
    cluster_spec = document["spec"] if document["kind"] == "RayCluster" else document["spec"]["rayClusterSpec"]
    head, workers = _groups(cluster_spec)
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] == IMAGE
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert cluster_spec["enableInTreeAutoscaling"] is True
    for group in workers:
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert any(env["name"] == "SVDBATCH_CACHE" for env in container["env"])


def test_rayjob_entrypoint_runs_a_job_spec_that_exists():
    entrypoint = shlex.split(_yaml("rayjob.yaml")["spec"]["entrypoint"])
    assert entrypoint[:4] == ["python", "-m", "svdbatch", "run"]
    assert (ROOT / entrypoint[4]).exists()
    assert "COPY jobs ./jobs" in _dockerfile()


def test_ray_up_config_uses_the_image_and_single_gpu_workers():
    config = _yaml("ray-up.yaml")
    assert config["docker"]["image"] == IMAGE
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert nodes["gpu_worker"]["resources"]["GPU"] == 1
    assert nodes["gpu_worker"]["min_workers"] <= nodes["gpu_worker"]["max_workers"] <= config["max_workers"]


def test_gpu_jobs_autoscale_up_to_the_gpus_the_clusters_can_add():
    most = _yaml("ray-up.yaml")["available_node_types"]["gpu_worker"]["max_workers"]
    assert most == _yaml("raycluster.yaml")["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    for name in ("svd-xt-catalog.yaml", "svd-augment.yaml"):
        actors = load_spec(ROOT / "jobs" / name).compute.actors
        assert actors.min == 1 and actors.max == most, name
