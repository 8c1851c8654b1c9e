"""``svdbatch manifest`` on an S3-compatible store named only by ``--set storage_options.*`` (the MinIO case): the
listing, the --params CSV and the written manifest all go through those options."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from helpers import write_images
from s3_server import moto_s3

from svdbatch import storage
from svdbatch.cli import main

BUCKET = "svdbatch-manifest"


def test_manifest_reads_and_writes_an_s3_compatible_store_given_by_set_storage_options(tmp_path, capsys, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with moto_s3(BUCKET) as (port, _):
        endpoint = f"http://127.0.0.1:{port}"
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
        for path in write_images(tmp_path / "images", 3):
            storage.write_bytes(f"s3://{BUCKET}/images/{Path(path).name}", Path(path).read_bytes(), options)
        storage.write_bytes(f"s3://{BUCKET}/params.csv", b"key,fps\nimg-001.png,9\n", options)
        sets = [
            "--set=storage_options.key=testing",
            "--set=storage_options.secret=testing",
            f"--set=storage_options.client_kwargs={{endpoint_url: '{endpoint}', region_name: us-east-1}}",
        ]
        paths = [f"s3://{BUCKET}/images/", "-o", f"s3://{BUCKET}/m.parquet", "--params", f"s3://{BUCKET}/params.csv"]
        code = main(["manifest", *paths, *sets])
        assert (code, capsys.readouterr().out.strip()) == (0, f"manifest: 3 images -> s3://{BUCKET}/m.parquet")
        (tmp_path / "m.parquet").write_bytes(storage.read_bytes(f"s3://{BUCKET}/m.parquet", options))
    rows = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert [row["image"] for row in rows] == [f"s3://{BUCKET}/images/img-{index:03d}.png" for index in range(3)]
    assert [row["fps"] for row in rows] == [None, 9, None]
    assert all(row["image_version"] for row in rows)  # the ETag from the listing
