"""The job specs and cluster configs agree with the project and with the schemas of what runs them: every file under
cluster/ parses, the pod templates are valid Kubernetes PodTemplateSpecs, ray-up.yaml passes Ray's own launcher
validation, and Ray, CUDA, credentials and requests are the same wherever they are named."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from svdbatch.demo import demo_spec
from svdbatch.spec.load import build_spec, load_spec, resolve_paths

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
IMAGE = "registry.example.com/svdbatch:0.1.0"
KUBERAY = ["raycluster.yaml", "rayjob.yaml"]
SECRET = "svdbatch-credentials"


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


@pytest.mark.parametrize(("name", "family"), [("wan-catalog.yaml", "wan"), ("ltx-catalog.yaml", "ltx")])
def test_wan_and_ltx_jobs_name_their_family_and_render_what_it_can(name, family):
    from svdbatch.model.families import spec_problems

    spec = load_spec(ROOT / "jobs" / name)
    assert spec.model.family == family and spec.manifest.prompt_column == "caption"
    assert spec_problems(spec, family) == []


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if "==" in requirement:
            name, pinned = requirement.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def _base_image_tag() -> str:
    return re.search(r"^FROM rayproject/ray:(\S+)$", _dockerfile(), re.MULTILINE).group(1)


def test_ray_version_is_the_same_everywhere():
    installed = version("ray")
    assert _pins()["ray"] == installed
    assert _base_image_tag().startswith(f"{installed}-")
    assert _yaml("raycluster.yaml")["spec"]["rayVersion"] == installed
    assert _yaml("rayjob.yaml")["spec"]["rayClusterSpec"]["rayVersion"] == installed


def test_image_installs_the_project_with_its_extras_under_the_pinned_constraints():
    (install,) = [line for line in _dockerfile().splitlines() if "pip install" in line]
    assert "-c /tmp/svdbatch-src/constraints.txt" in install and " -e " not in install
    assert '"/tmp/svdbatch-src[s3,cluster]"' in install
    assert "--chown=ray:users constraints.txt" in _dockerfile()
    assert version("torch").split("+")[0] == _pins()["torch"]


def _cuda_line(name: str, pinned: str) -> str | None:
    """The CUDA major a package belongs to, as cluster/check-image.sh judges it (by a -cuNN name, else by the version
    of the packages whose version is CUDA's own)."""
    suffix = re.search(r"-cu(\d\d)", name)
    if suffix:
        return suffix.group(1)
    if name in {"cuda-toolkit", "cuda-bindings", "nvidia-nvjitlink", "nvidia-nvtx"} or name.startswith("nvidia-cuda-"):
        return pinned.split(".")[0]
    return None


def test_the_image_has_one_cuda_line_and_it_is_torchs():
    """The base image brings no CUDA of its own (or the same major), and torch from PyPI (no other index in the
    Dockerfile) brings the CUDA line that constraints.txt pins its runtime packages at."""
    dockerfile = _dockerfile()
    assert "--index-url" not in dockerfile and "download.pytorch.org" not in dockerfile
    torch_lines = {line for name, pinned in _pins().items() if (line := _cuda_line(name, pinned))}
    assert torch_lines == {"13"}
    platform = _base_image_tag().rsplit("-", 1)[1]
    assert platform == "cpu" or platform.startswith("cu13"), platform
    assert "One CUDA line, 13" in dockerfile and "driver >= 580" in dockerfile


def test_every_file_under_cluster_parses():
    files = sorted(path for path in CLUSTER.rglob("*") if path.is_file())
    assert {path.suffix for path in files} <= {".yaml", ".json", ".sh", ""}, files
    for path in files:
        if path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.suffix == ".sh":
            subprocess.run(["bash", "-n", str(path)], check=True)
            assert path.stat().st_mode & 0o111, f"{path} is not executable"
        else:
            assert path.name == "Dockerfile" and _base_image_tag()


def _cluster_spec(name: str) -> dict:
    document = _yaml(name)
    return document["spec"] if document["kind"] == "RayCluster" else document["spec"]["rayClusterSpec"]


def _templates(name: str) -> list[tuple[str, dict]]:
    spec = _cluster_spec(name)
    groups = [("head", spec["headGroupSpec"])] + [(group["groupName"], group) for group in spec["workerGroupSpecs"]]
    return [(group_name, group["template"]) for group_name, group in groups]


def _validate_pod_template(template: dict) -> None:
    """Kubernetes' own schema for a PodTemplateSpec (inside a PodTemplate), unknown fields rejected."""
    document = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_pod_templates_are_valid_pod_template_specs(name):
    for _group, template in _templates(name):
        _validate_pod_template(template)


def test_pod_template_check_rejects_a_misspelt_field():
    _group, template = _templates("raycluster.yaml")[1]
    misspelt = copy.deepcopy(template)
    misspelt["spec"]["containers"][0]["envfrom"] = misspelt["spec"]["containers"][0].pop("envFrom")
    with pytest.raises(kubernetes_validate.ValidationError, match="envfrom"):
        _validate_pod_template(misspelt)


def _ray_up_prepared(config: dict) -> dict:
    """What `ray up` validates: the config merged with Ray's defaults, checked against the installed ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_up_config_passes_rays_launcher_validation():
    import jsonschema

    prepared = _ray_up_prepared(_yaml("ray-up.yaml"))
    assert prepared["available_node_types"]["gpu_worker"]["max_workers"] == 16
    misspelt = _yaml("ray-up.yaml")
    misspelt["docker"]["worker_run_option"] = misspelt["docker"].pop("worker_run_options")
    with pytest.raises(jsonschema.ValidationError, match="worker_run_option"):
        _ray_up_prepared(misspelt)


def test_ray_up_gives_gpus_and_an_instance_profile_to_the_gpu_workers_only():
    config = _yaml("ray-up.yaml")
    assert not any("--gpus" in option for option in config["docker"]["run_options"])
    assert config["docker"]["worker_run_options"] == ["--gpus all"]
    nodes = config["available_node_types"]
    assert nodes["gpu_worker"]["node_config"]["IamInstanceProfile"]["Name"]
    options = " ".join(config["docker"]["run_options"])
    assert "--volume /mnt/svdbatch-cache:/cache" in options
    assert "SVDBATCH_CACHE=/cache/" in options and "HF_HOME=/cache/" in options


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_container_gets_credentials_from_the_secret(name):
    for group, template in _templates(name):
        for container in template["spec"]["containers"]:
            sources = [source["secretRef"]["name"] for source in container.get("envFrom", [])]
            assert sources == [SECRET], (group, container["name"])
        assert "serviceAccountName" not in template["spec"], "a head serviceAccountName needs hand-made RBAC"


@pytest.mark.parametrize("name", KUBERAY)
def test_gpu_workers_keep_weights_on_a_node_volume_that_outlives_pods(name):
    for group, template in _templates(name)[1:]:
        (volume,) = template["spec"]["volumes"]
        assert volume["hostPath"]["type"] == "DirectoryOrCreate", group
        (container,) = template["spec"]["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["SVDBATCH_CACHE"].startswith(mount["mountPath"] + "/")
        assert env["HF_HOME"].startswith(mount["mountPath"] + "/")


def _quantity(value) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _node_table() -> dict[str, dict[str, str]]:
    """docs/deploy.md's table of node types: allocatable resources per instance type."""
    lines = (ROOT / "docs" / "deploy.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| node type |"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    cells = [[cell.strip(" `") for cell in line.strip("|").split("|")] for line in table]
    header, rows = cells[0], cells[2:]
    assert header[:6] == ["node type", "used by", "allocatable CPU", "allocatable memory", "GPUs", "requests used"]
    return {row[0]: dict(zip(header, row)) for row in rows}


@pytest.mark.parametrize("name", KUBERAY)
def test_requests_fit_the_allocatable_resources_of_the_node_types_they_select(name):
    table = _node_table()
    for group, template in _templates(name):
        node = table[template["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]]
        (container,) = template["spec"]["containers"]
        requests = container["resources"]["requests"]
        assert _quantity(requests["cpu"]) <= _quantity(node["allocatable CPU"]), group
        assert _quantity(requests["memory"]) <= _quantity(node["allocatable memory"]), group
        assert int(requests.get("nvidia.com/gpu", 0)) <= int(node["GPUs"]), group
        assert f'{requests["cpu"]} CPU / {requests["memory"]}' in node["requests used"], group


def test_catalog_job_fits_one_gpu_worker():
    _group, template = _templates("raycluster.yaml")[1]
    worker_cpus = _quantity(template["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    compute = load_spec(ROOT / "jobs" / "svd-xt-catalog.yaml").compute
    assert compute.cpus_per_actor + compute.cpus_per_task <= worker_cpus
    assert compute.gpus_per_actor == 1


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_head_is_cpu_only_and_workers_have_one_gpu_each(name):
    cluster_spec = _cluster_spec(name)
    head, workers = cluster_spec["headGroupSpec"], cluster_spec["workerGroupSpecs"]
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


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_autoscaler_v2_and_token_auth_are_explicit(name):
    cluster_spec = _cluster_spec(name)
    assert cluster_spec["autoscalerOptions"]["version"] == "v2"
    assert cluster_spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert cluster_spec["authOptions"] == {"mode": "token"}


def test_rayjob_runs_a_spec_from_object_storage_and_is_bounded():
    spec = _yaml("rayjob.yaml")["spec"]
    entrypoint = shlex.split(spec["entrypoint"])
    assert entrypoint[:2] == ["svdbatch", "run"] and entrypoint[2].startswith("s3://")
    assert entrypoint[2] in (ROOT / "docs" / "deploy.md").read_text()
    assert 0 < spec["activeDeadlineSeconds"] <= 7 * 24 * 3600
    assert 1 <= spec["backoffLimit"] <= 3
    assert spec["shutdownAfterJobFinishes"] is True


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


def _judge_resolution(tmp_path: Path, packages: list[tuple[str, str]]) -> subprocess.CompletedProcess:
    """Runs check-image.sh's judgement (its embedded Python) on a pip report of these packages, without a network."""
    script = (CLUSTER / "check-image.sh").read_text()
    judge = script[script.index("<<'PY'\n") + len("<<'PY'\n") : script.index("\nPY\n")]
    report = {"install": [{"metadata": {"name": n, "version": v}, "download_info": {}} for n, v in packages]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "judge.py").write_text(judge)
    command = [sys.executable, str(tmp_path / "judge.py"), str(tmp_path / "report.json"), str(ROOT / "constraints.txt")]
    return subprocess.run(command, capture_output=True, text=True)


def test_check_image_accepts_one_pinned_cuda_line(tmp_path):
    pins = _pins()
    packages = [(name, pins[name]) for name in ("torch", "nvidia-cudnn-cu13", "cuda-toolkit", "nvidia-cufft")]
    result = _judge_resolution(tmp_path, packages)
    assert result.returncode == 0, result.stderr
    assert "CUDA lines: 13" in result.stdout and "OK: one CUDA line, every package pinned" in result.stdout


def test_check_image_fails_on_a_second_cuda_line_and_an_unpinned_package(tmp_path):
    packages = [("torch", _pins()["torch"]), ("nvidia-cudnn-cu13", _pins()["nvidia-cudnn-cu13"]),
                ("nvidia-cublas-cu12", "12.8.4.1"), ("diffusers", "0.1.0")]
    result = _judge_resolution(tmp_path, packages)
    assert result.returncode == 1
    assert "two CUDA lines: 12: nvidia-cublas-cu12; 13: nvidia-cudnn-cu13" in result.stderr
    assert "not pinned by constraints.txt: diffusers==0.1.0, nvidia-cublas-cu12==12.8.4.1" in result.stderr
