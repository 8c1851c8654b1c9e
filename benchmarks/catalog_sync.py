"""Catalog sync costs against moto's S3 server on loopback: image version lookups, and the model copy.

    python benchmarks/catalog_sync.py [--objects 2000] [--scale 1000]

1. Version lookups (what a rerun does per image when the manifest has no ``image_version``): lookups/s of
   ``storage.versions`` (16 HEADs in flight) against one HEAD at a time, over ``--objects`` images.
2. The node copy of a model: a folder laid out like the SVD-XT hub repository (fp32 and fp16 files per component
   and the two single-file checkpoints; sizes are the hub's, approximately, divided by ``--scale``) copied with
   ``model.variant: fp16``: bytes in the prefix, bytes copied, files and seconds.

Needs the test extras (moto).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import SVD_INDEX  # noqa: E402
from s3_server import moto_s3  # noqa: E402

from svdbatch import storage  # noqa: E402

BUCKET = "bench"
# SVD-XT hub repository, approximate sizes in MB.
SVD_XT_MB = {
    "svd_xt.safetensors": 9560,
    "svd_xt_image_decoder.safetensors": 9560,
    "unet/diffusion_pytorch_model.safetensors": 6100,
    "unet/diffusion_pytorch_model.fp16.safetensors": 3050,
    "vae/diffusion_pytorch_model.safetensors": 392,
    "vae/diffusion_pytorch_model.fp16.safetensors": 196,
    "image_encoder/model.safetensors": 2530,
    "image_encoder/model.fp16.safetensors": 1265,
}
CONFIGS = [
    "unet/config.json",
    "vae/config.json",
    "image_encoder/config.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
]


def lookups(objects: int, options: dict) -> None:
    urls = [f"s3://{BUCKET}/images/{index:06d}.png" for index in range(objects)]
    fs, _ = storage.filesystem(urls[0], options)
    for url in urls:
        fs.pipe_file(url, b"x" * 64)
    started = time.perf_counter()
    for url in urls:
        fs.invalidate_cache(url)
        storage.object_version(fs.info(url))
    serial = time.perf_counter() - started
    started = time.perf_counter()
    found = storage.versions(urls, options)
    parallel = time.perf_counter() - started
    assert all(found.values())
    print(f"version lookups, {objects} objects: one at a time {objects / serial:.0f}/s; "
          f"storage.versions {objects / parallel:.0f}/s ({serial / parallel:.1f}x)")


def model_copy(scale: int, options: dict) -> None:
    from svdbatch.model.cache import COPY_RECORD, remote_copy

    source = f"s3://{BUCKET}/svd-xt"
    fs, _ = storage.filesystem(source, options)
    fs.pipe_file(f"{source}/model_index.json", json.dumps(SVD_INDEX).encode())
    for name in CONFIGS:
        fs.pipe_file(f"{source}/{name}", b"{}")
    for name, megabytes in SVD_XT_MB.items():
        fs.pipe_file(f"{source}/{name}", os.urandom(megabytes * 1024 * 1024 // scale))
    total = sum(info["size"] for info in fs.find(f"{BUCKET}/svd-xt", detail=True).values())
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SVDBATCH_CACHE"] = cache
        record = json.loads((remote_copy(source, options, "fp16") / COPY_RECORD).read_text())
    print(f"model copy (SVD-XT layout / {scale}): prefix {total / 1e6:.1f} MB; copied {record['bytes'] / 1e6:.1f} MB "
          f"({record['bytes'] / total:.0%}) in {record['files']} files, {record['seconds']:.2f}s; "
          f"at full size: {total * scale / 1e9:.1f} GB -> {record['bytes'] * scale / 1e9:.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--scale", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
    with moto_s3(BUCKET) as (port, _):
        client = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
        options = {"key": "testing", "secret": "testing", "client_kwargs": client}
        lookups(args.objects, options)
        model_copy(args.scale, options)


if __name__ == "__main__":
    main()
