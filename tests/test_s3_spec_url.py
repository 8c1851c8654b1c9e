"""A job spec read from an s3:// URL (moto on loopback): credentials from the environment or --set storage_options,
relative paths resolved against the URL's folder, a missing spec answered in one line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import TEST_COMPUTE, TEST_RENDER, write_images
from s3_server import moto_s3

from svdbatch.spec.config import SpecError
from svdbatch.spec.load import load_spec

BUCKET = "svdbatch-spec"
SECRET = "spec-s3cr3t-9d2e"


@pytest.fixture(scope="module")
def spec_on_s3(tmp_path_factory):
    """s3://BUCKET/jobs/job.yaml naming its manifest and output relatively, beside two images on the bucket."""
    with moto_s3(BUCKET, SECRET) as (port, client):
        folder = tmp_path_factory.mktemp("spec-url")
        keys, uris = [], []
        for path in write_images(folder / "images", 2):
            client.upload_file(path, BUCKET, f"jobs/images/{Path(path).name}")
            keys.append(Path(path).stem)
            uris.append(f"s3://{BUCKET}/jobs/images/{Path(path).name}")
        buffer = io.BytesIO()
        pq.write_table(pa.table({"key": keys, "image": uris}), buffer)
        client.put_object(Bucket=BUCKET, Key="jobs/manifest.parquet", Body=buffer.getvalue())
        job = {"manifest": {"path": "manifest.parquet"}, "output": {"url": "out"}, "render": TEST_RENDER}
        client.put_object(Bucket=BUCKET, Key="jobs/job.yaml", Body=yaml.safe_dump({**job, "compute": TEST_COMPUTE}))
        yield f"http://127.0.0.1:{port}"


def _options(endpoint: str) -> list[str]:
    return [
        "storage_options.key=testing",
        f"storage_options.secret={SECRET}",
        f"storage_options.client_kwargs.endpoint_url={endpoint}",
        "storage_options.client_kwargs.region_name=us-east-1",
    ]


def test_set_storage_options_read_the_spec_and_its_paths_resolve_against_the_url(spec_on_s3):
    spec = load_spec(f"s3://{BUCKET}/jobs/job.yaml", _options(spec_on_s3))
    assert spec.manifest.path == f"s3://{BUCKET}/jobs/manifest.parquet"
    assert spec.output.url == f"s3://{BUCKET}/jobs/out"
    assert spec.shown("manifest.path") == f"manifest.parquet (resolved: s3://{BUCKET}/jobs/manifest.parquet)"


def test_a_missing_spec_url_is_one_line_naming_it(spec_on_s3):
    url = f"s3://{BUCKET}/jobs/nope.yaml"
    with pytest.raises(SpecError) as error:
        load_spec(url, _options(spec_on_s3))
    assert str(error.value).startswith(f"{url}: cannot read the job spec (FileNotFoundError")
    assert "\n" not in str(error.value) and SECRET not in str(error.value)


def test_plan_from_an_s3_spec_with_credentials_only_in_the_environment(spec_on_s3):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_", "AWS_"))}
    env.update(
        RAY_AUTH_MODE="disabled",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_ENDPOINT_URL=spec_on_s3,
        AWS_DEFAULT_REGION="us-east-1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "svdbatch.cli", "plan", f"s3://{BUCKET}/jobs/job.yaml", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "manifest: 1 file(s), 2 rows -> 2 items" in result.stdout
    assert "to render: 2 new," in result.stdout
