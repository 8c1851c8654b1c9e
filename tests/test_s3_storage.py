"""Object storage end to end against moto's real S3-protocol server on loopback, through a fault-injecting proxy."""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_spec, write_images, write_manifest
from s3_server import FaultyProxy, moto_s3

from svdbatch.errors import JobError
from svdbatch.model.loading import ensure_tiny_model
from svdbatch.ray import driver

BUCKET = "svdbatch-test"
SECRET = "s3cr3t-d0-n0t-l3ak-7f9a"


@pytest.fixture(scope="module")
def moto_server():
    with moto_s3(BUCKET, SECRET) as server:
        yield server


def _options(endpoint: str) -> dict:
    return {
        "key": "testing",
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30},
    }


def _upload(client, local: Path, key: str) -> None:
    client.upload_file(str(local), BUCKET, key)


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def runs(ray_cluster, moto_server, tmp_path_factory):
    """The same job twice: all local, and all on s3:// through a proxy failing 20% of requests, with two actors."""
    port, client = moto_server
    folder = tmp_path_factory.mktemp("s3job")
    images = write_images(folder / "images", 4)
    keys = [f"sku/{index}" for index in range(4)]
    local_spec = make_spec(write_manifest(folder / "m.parquet", {"key": keys, "image": images}), folder / "local")
    local = driver.run(local_spec, progress=False)

    for path in images:
        _upload(client, Path(path), f"inputs/{Path(path).name}")
    remote_images = [f"s3://{BUCKET}/inputs/{Path(path).name}" for path in images]
    buffer = io.BytesIO()
    pq.write_table(pa.table({"key": keys, "image": remote_images}), buffer)
    client.put_object(Bucket=BUCKET, Key="manifests/part-0.parquet", Body=buffer.getvalue())
    for path in Path(ensure_tiny_model()).rglob("*"):
        if path.is_file():
            _upload(client, path, f"models/tiny/{path.relative_to(ensure_tiny_model())}")

    with FaultyProxy(port, failure_rate=0.2, seed=3) as proxy:
        remote_spec = make_spec(
            f"s3://{BUCKET}/manifests/",
            f"s3://{BUCKET}/out",
            model={"source": f"s3://{BUCKET}/models/tiny"},
            compute={"actors": 2, "cpus_per_actor": 0.5},
            storage_options=_options(proxy.url),
        )
        remote = driver.run(remote_spec, progress=False)
    return {"local": local_spec, "remote": remote, "proxy": proxy, "client": client, "local_summary": local}


def _remote_table(client) -> pa.Table:
    """The bucket files of the metadata table, read through boto3 alone."""
    keys = _keys(client, "out/metadata/")
    assert keys and all(key.endswith(".parquet") for key in keys), keys
    bodies = [client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys]
    return pa.concat_tables(pq.read_table(io.BytesIO(body)) for body in bodies)


def _rows(table: pa.Table) -> dict:
    return {(row["key"], row["variant"]): row for row in table.to_pylist()}


def test_local_and_s3_runs_give_identical_metadata(runs):
    client = runs["client"]
    assert runs["local_summary"].rendered == 4 and runs["remote"].rendered == 4 and runs["remote"].failed == 0
    local = _rows(pq.read_table(Path(runs["local"].output.url) / "metadata"))
    remote = _rows(_remote_table(client))
    assert local.keys() == remote.keys()
    for item, row in local.items():
        assert (row["seed"], row["sha256"], row["bytes"]) == (
            remote[item]["seed"],
            remote[item]["sha256"],
            remote[item]["bytes"],
        )
        assert remote[item]["video_uri"].startswith(f"s3://{BUCKET}/out/videos/")


def test_boto3_lists_and_downloads_every_video_exactly_once_with_no_partials(runs):
    client = runs["client"]
    assert runs["proxy"].injected["503"] > 0 and runs["proxy"].injected["reset"] > 0
    rows = _remote_table(client).to_pylist()
    videos = _keys(client, "out/videos/")
    assert videos == sorted(row["video_uri"].removeprefix(f"s3://{BUCKET}/") for row in rows)
    outputs = _keys(client, "out/")
    assert all(key.startswith(("out/videos/", "out/metadata/", "out/_job/")) for key in outputs), outputs
    import hashlib

    for row in rows:
        data = client.get_object(Bucket=BUCKET, Key=row["video_uri"].removeprefix(f"s3://{BUCKET}/"))["Body"].read()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]


def test_model_weights_are_fetched_once_per_node_with_two_actors(runs):
    gets = runs["proxy"].gets
    weights = {path: count for path, count in gets.items() if "/models/tiny/" in path and path.endswith(".safetensors")}
    assert len(weights) == 3  # unet, vae, image_encoder
    assert set(weights.values()) == {1}, weights


def test_secret_never_appears_in_outputs_job_record_or_logs(runs):
    client = runs["client"]
    for key in _keys(client, "out/"):
        assert SECRET.encode() not in client.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key
    record = json.loads(client.get_object(Bucket=BUCKET, Key="out/_job/summary.json")["Body"].read())
    assert record["spec"]["storage_options"]["secret"] == "***"
    assert {"torch", "diffusers", "ray", "svdbatch"} <= record["versions"].keys()
    logs = [path for path in glob.glob("/tmp/ray/session_latest/logs/**/*", recursive=True) if Path(path).is_file()]
    assert logs
    for log in logs:
        with open(log, "rb") as handle:
            assert SECRET.encode() not in handle.read(), log


def test_unwritable_output_and_missing_client_fail_before_any_work(moto_server, tmp_path):
    port, _ = moto_server
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["a"], "image": ["/nope.png"]})
    spec = make_spec(manifest, "s3://no-such-bucket/out", storage_options=_options(f"http://127.0.0.1:{port}"))
    with pytest.raises(JobError, match="output s3://no-such-bucket/out is not writable"):
        driver.run(spec, progress=False)
    with pytest.raises(JobError) as caught:
        driver.run(make_spec(manifest, "gs://bucket/out"), progress=False)
    # Without gcsfs: the extra to install; with it and no route to Google (or no credentials): one line naming it.
    assert any(
        words in str(caught.value)
        for words in ("pip install 'svdbatch[gcs]'", "not writable", "storage.googleapis.com", "no credentials for gs")
    ), str(caught.value)
    assert SECRET not in str(caught.value)


def test_report_is_written_back_to_object_storage(runs, moto_server):
    from svdbatch.report.page import write_report

    port, client = moto_server
    index = write_report(f"s3://{BUCKET}/out", _options(f"http://127.0.0.1:{port}"))
    assert index == f"s3://{BUCKET}/out/report/index.html"
    keys = _keys(client, "out/report/")
    assert "out/report/index.html" in keys and "out/report/contact_sheet.png" in keys
    assert len([key for key in keys if key.startswith("out/report/posters/")]) == 4
    page = client.get_object(Bucket=BUCKET, Key="out/report/index.html")["Body"].read().decode()
    assert "../videos/" in page and SECRET not in page
