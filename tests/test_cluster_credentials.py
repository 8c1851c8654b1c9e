"""Credentials only in the environment: a multi-node local Ray cluster whose processes get S3 credentials from their
environment alone (the spec has no storage_options), against moto. The spec, manifest, images, staged weights and
output all live on S3; afterwards no object, CLI output or Ray log holds the secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import TEST_RENDER, stop_shared_ray, write_images
from s3_server import moto_s3

from svdbatch.cli import main
from svdbatch.model.cache import STAGE_RECORD

BUCKET = "svdbatch-env"
SECRET = "env-only-secret-7c41f09e2b"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env_cluster(monkeypatch, tmp_path):
    """moto, S3 credentials set only in the environment, and a head with two GPU worker nodes started under it."""
    import ray
    from ray.cluster_utils import Cluster

    stop_shared_ray()
    with moto_s3(BUCKET, secret=SECRET) as (port, client):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials-file"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config-file"))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        try:
            yield cluster, client
        finally:
            ray.shutdown()
            cluster.shutdown()


def _objects(client) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def test_job_on_s3_with_credentials_only_in_the_environment_leaves_no_secret(env_cluster, tmp_path, capsys):
    cluster, client = env_cluster
    s3 = f"s3://{BUCKET}"
    assert main(["model", "stage", "svdbatch:tiny", f"{s3}/models/tiny"]) == 0
    images = write_images(tmp_path / "images", 4)
    for path in images:
        client.put_object(Bucket=BUCKET, Key=f"images/{Path(path).name}", Body=Path(path).read_bytes())
    keys = [f"k{index}" for index in range(6)]
    uris = [f"{s3}/images/{Path(images[index % 4]).name}" for index in range(6)]
    pq.write_table(pa.table({"key": keys, "image": uris}), tmp_path / "m.parquet")
    client.put_object(Bucket=BUCKET, Key="manifests/m.parquet", Body=(tmp_path / "m.parquet").read_bytes())
    job = {
        "manifest": {"path": f"{s3}/manifests/m.parquet"},
        "output": {"url": f"{s3}/out"},
        "model": {"source": f"{s3}/models/tiny"},
        "images": {"allowed_schemes": ["s3"]},
        "render": TEST_RENDER,
        "compute": {
            "actors": {"min": 1},
            "batch_size": 1,
            "cpus_per_actor": 0.2,
            "cpus_per_task": 0.1,
            "torch_threads": 1,
        },
    }
    client.put_object(Bucket=BUCKET, Key="jobs/job.yaml", Body=yaml.safe_dump(job).encode())

    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    command = [sys.executable, "-m", "svdbatch", "run", f"{s3}/jobs/job.yaml", "--quiet"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "svdbatch: 6 ok, 0 failed" in done.stdout

    objects = _objects(client)
    videos = [name for name in objects if name.startswith("out/videos/") and name.endswith(".mp4")]
    assert sorted(name.removeprefix("out/videos/").split("-")[0] for name in videos) == keys
    (run,) = [json.loads(body) for name, body in objects.items() if name.startswith("out/_job/runs/")]
    assert run["model_copies"] and {copy["verified"] for copy in run["model_copies"]} == {STAGE_RECORD}
    leaked = [key for key, body in objects.items() if SECRET.encode() in body]
    assert not leaked, leaked
    assert SECRET not in done.stdout + done.stderr + capsys.readouterr().out
    logs = Path(cluster.head_node.get_session_dir_path()) / "logs"
    assert len(list(logs.rglob("*"))) > 10  # the session's logs are there to be searched
    leaked = [str(path) for path in logs.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert not leaked, leaked
