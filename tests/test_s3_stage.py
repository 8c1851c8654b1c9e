"""``svdbatch model stage`` to moto's S3 server: exactly the files the pipeline loads, an interrupted stage resumed, a
rerun that copies nothing, a lost object copied again, then a real job that loads the staged URL."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from helpers import make_spec, save_variant_model, write_images, write_manifest
from s3_server import moto_s3

from svdbatch.cli import main
from svdbatch.model.cache import COPY_RECORD, STAGE_RECORD
from svdbatch.model.identity import cache_root
from svdbatch.model.staging import PROGRESS, stage
from svdbatch.ray import driver
from svdbatch.render.video import probe

BUCKET = "svdbatch-stage"
PREFIX = "models/tiny-fp16"


def _keys(client) -> set[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Contents", [])
    return {item["Key"].removeprefix(f"{PREFIX}/") for item in listed}


def test_weights_staged_once_to_s3_resume_and_a_job_loads_them(ray_cluster, tmp_path, capsys):
    pipeline = save_variant_model(tmp_path / "pipeline")  # fp32 + fp16 files and a stray single-file checkpoint
    (pipeline / "unet" / "diffusion_pytorch_model.fp16.bin").write_bytes(b"duplicate weights")
    (pipeline / "README.md").write_text("not part of the pipeline")
    expected = {str(path.relative_to(pipeline)) for path in pipeline.rglob("*.fp16.safetensors")}
    expected |= {str(path.relative_to(pipeline)) for path in pipeline.glob("*/*.json")} | {"model_index.json"}
    with moto_s3(BUCKET) as (port, client):
        endpoint = f"http://127.0.0.1:{port}"
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
        url = f"s3://{BUCKET}/{PREFIX}"
        flags = ["--variant", "fp16", "--set", "storage_options.key=testing", "--set", "storage_options.secret=testing"]
        flags += ["--set", f"storage_options.client_kwargs.endpoint_url={endpoint}"]

        def stopped(line: str) -> None:  # Ctrl-C once the first file is verified: queued files never start
            raise KeyboardInterrupt(line)

        with pytest.raises(KeyboardInterrupt):
            stage(str(pipeline), url, "fp16", options, say=stopped)
        progress = json.loads(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{PROGRESS}")["Body"].read())
        verified = set(progress["files"])
        assert STAGE_RECORD not in _keys(client) and verified and verified < expected

        assert main(["model", "stage", str(pipeline), url, *flags]) == 0
        copied = len(expected) - len(verified)
        assert f"{copied} copied, {len(verified)} already there" in capsys.readouterr().out
        assert _keys(client) == expected | {STAGE_RECORD}  # the progress file is gone, no stray file came along
        record = json.loads(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{STAGE_RECORD}")["Body"].read())
        assert set(record["files"]) == expected and record["variant"] == "fp16"

        assert main(["model", "stage", str(pipeline), url, *flags]) == 0
        assert f"0 copied, {len(expected)} already there" in capsys.readouterr().out

        client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/vae/diffusion_pytorch_model.fp16.safetensors")
        assert main(["model", "stage", str(pipeline), url, *flags]) == 0
        out = capsys.readouterr().out
        assert f"1 copied, {len(expected) - 1} already there" in out
        assert "copied vae/diffusion_pytorch_model.fp16.safetensors" in out

        images = write_images(tmp_path / "images", 3)
        manifest = write_manifest(tmp_path / "m.parquet", {"key": ["a", "b", "c"], "image": images})
        spec = make_spec(manifest, tmp_path / "out", options, model={"source": url, "variant": "fp16"})
        summary = driver.run(spec, progress=False)
        assert (summary.rendered, summary.failed) == (3, 0)
    rows = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    assert {row["status"] for row in rows} == {"ok"} and probe(rows[0]["video_uri"]).frames == 8
    copies = [json.loads(path.read_text()) for path in (cache_root() / "models").glob(f"remote-*/{COPY_RECORD}")]
    (copy,) = [copy for copy in copies if copy["source"] == url]
    assert copy["verified"] == STAGE_RECORD and copy["files"] == len(expected)
