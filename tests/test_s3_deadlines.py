"""A store that does not answer is named in one line before any work; a store that dies mid-job stops the run in
one line, loses nothing committed, and a rerun finishes the job.

The CLI cases run as a user would (fresh processes, default deadlines), all at once so the file costs one wait.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import TEST_COMPUTE, TEST_RENDER, make_spec, numbered_manifest, write_images
from s3_server import free_port

pytestmark = pytest.mark.slow
CLI_LIMIT_S = 60
BUCKET = "deadlines"


class SilentServer:
    """Accepts every connection and never answers: a firewall that drops replies, a wedged MinIO."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _spec(folder: Path, manifest: str, output: str, model: str, endpoint: str) -> Path:
    data = {
        "manifest": {"path": manifest},
        "output": {"url": output},
        "model": {"source": model},
        "render": dict(TEST_RENDER),
        "compute": dict(TEST_COMPUTE),
        "storage_options": {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(yaml.safe_dump(data))
    return folder / "job.yaml"


def _start(command: list[str], home: Path) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env["HOME"] = str(home)  # no credentials file of the machine's user is found
    cli = [sys.executable, "-m", "svdbatch", *command]
    return subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.monotonic()


@pytest.fixture(scope="module")
def unreachable_runs(tmp_path_factory):
    """Every pre-flight case at once: run and plan with the manifest, the output or the model on a silent
    endpoint; a refused port; a gs:// output without credentials (gcsfs installed, no route to Google here)."""
    tmp = tmp_path_factory.mktemp("deadlines")
    home = tmp / "home"
    home.mkdir()
    manifest = numbered_manifest(tmp, write_images(tmp / "images", 2), 2)
    silent = SilentServer()
    refused = f"http://127.0.0.1:{free_port()}"
    local = {"manifest": str(manifest), "output": str(tmp / "out"), "model": "svdbatch:tiny"}
    remote = {"manifest": f"s3://{BUCKET}/m.parquet", "output": f"s3://{BUCKET}/out", "model": f"s3://{BUCKET}/m"}
    cases = {}
    for where in ("manifest", "output", "model"):
        job = _spec(tmp / where, **{**local, where: remote[where]}, endpoint=silent.url)
        for command in ("run", "plan"):
            cases[f"{command} {where} silent"] = (_start([command, str(job)], home), silent.url.split("//")[1])
    job = _spec(tmp / "refused", **{**local, "output": remote["output"]}, endpoint=refused)
    cases["run output refused"] = (_start(["run", str(job)], home), refused.split("//")[1])
    job = _spec(tmp / "gs", **{**local, "output": "gs://svdbatch-no-such-bucket/out"}, endpoint=silent.url)
    cases["run output gs"] = (_start(["run", str(job)], home), "gs://svdbatch-no-such-bucket/out")
    results = {}
    for name, ((process, started), expected) in cases.items():
        try:
            out, err = process.communicate(timeout=CLI_LIMIT_S * 2)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results[name] = (process.returncode, time.monotonic() - started, out, err, expected)
    silent.close()
    return results


@pytest.mark.parametrize(
    "case",
    [f"{c} {w} silent" for c in ("run", "plan") for w in ("manifest", "output", "model")]
    + ["run output refused", "run output gs"],
)
def test_an_unreachable_store_is_one_line_naming_it_within_a_minute(unreachable_runs, case):
    code, seconds, out, err, expected = unreachable_runs[case]
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 1, (case, out, err)
    assert seconds < CLI_LIMIT_S, (case, seconds)
    assert len(lines) == 1 and "Traceback" not in err, (case, lines)
    assert lines[0].startswith("svdbatch: error: ") and expected in lines[0], lines[0]


def test_gs_without_credentials_says_what_to_set(unreachable_runs):
    line = unreachable_runs["run output gs"][3].strip()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "storage.googleapis.com" in line, line


def test_a_store_that_dies_mid_job_stops_the_run_in_one_line_and_a_rerun_finishes_it(ray_cluster, tmp_path):
    """moto stopped after the first commits: the run stops within its budget naming the endpoint; the table holds
    only whole committed rows; with the store back, a rerun renders the rest, each item once."""
    import boto3
    import pyarrow.parquet as pq
    import s3fs
    from moto.server import ThreadedMotoServer

    from svdbatch.errors import UserError
    from svdbatch.ray import driver

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    options = {
        "key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "connect_timeout_s": 2, "read_timeout_s": 5, "retry_budget_s": 8,
    }
    items = 24
    manifest = numbered_manifest(tmp_path, write_images(tmp_path / "images", 4), items)
    spec = make_spec(manifest, f"s3://{BUCKET}/out", options, failures={"max_error_fraction": 1.0})

    def stop_after_first_commit() -> None:
        while not client.list_objects_v2(Bucket=BUCKET, Prefix="out/_commits/").get("KeyCount"):
            time.sleep(0.2)
        server.stop()

    killer = threading.Thread(target=stop_after_first_commit, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(UserError) as stopped:
            driver.run(spec, progress=False)
        waited = time.monotonic() - started
        killer.join(timeout=5)
        message = str(stopped.value)
        assert "\n" not in message and f"127.0.0.1:{port}" in message, message
        server.start()  # moto keeps its buckets in this process: the store comes back as it was
        fs = s3fs.S3FileSystem(key="k", secret="s", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        committed = [pq.read_table(path, filesystem=fs) for path in fs.glob(f"{BUCKET}/out/**/*.parquet")]
        for table in committed:  # every committed file is whole (it parsed) and its ok rows' videos exist
            for row in table.to_pylist():
                if row.get("status") == "ok":
                    assert fs.exists(row["video_uri"].removeprefix("s3://")), row["video_uri"]
        assert fs.find(f"{BUCKET}/out/videos"), "nothing was committed before the store died"
        # The first run could not release its lease (the store was down) and lived in this very process, which
        # counts as a live holder: a rerun from a new process takes it at once (test_cluster_kills); here, take over.
        rerun = driver.run(spec, progress=False, take_over=True)
        assert rerun.failed == 0
        fs.invalidate_cache()
        rows = pq.read_table(f"{BUCKET}/out/metadata", filesystem=fs).to_pylist()
        assert len(rows) == items and len({(row["key"], row["variant"]) for row in rows}) == items
        assert all(row["status"] == "ok" for row in rows)
        assert len(fs.find(f"{BUCKET}/out/videos")) == items
    finally:
        server.stop()
    print(f"store died mid-job: the run stopped {waited:.1f} s after it started: {message}")
