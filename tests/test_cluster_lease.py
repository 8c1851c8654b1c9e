"""One live run per output, with real `svdbatch run` processes on one output: a second run refuses naming the holder,
--take-over stops the holder, a SIGKILLed holder's lease is taken by the next run on this machine at once, and a
holder on another machine that keeps renewing is waited for (--lease-wait), then refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from helpers import make_spec, numbered_manifest, write_images, write_manifest

from svdbatch.store import lease, lease_records

TTL_S = 60.0  # the killed holder's lease must outlast the rerun's start (imports, preflight) on a busy machine
ITEMS = 30
KEEP = ["item-000", "item-001", "item-002"]


def _driver_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=_driver_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _holder(output: Path) -> tuple[int, lease_records.Holder] | None:
    return lease_records.newest_record(*lease_records.lease_folder(str(output), {}))


def test_a_second_run_refuses_take_over_stops_the_holder_and_a_killed_holders_rerun_takes_it_at_once(tmp_path):
    images = write_images(tmp_path / "images", 4)
    output = tmp_path / "out"
    spec = make_spec(numbered_manifest(tmp_path, images, ITEMS), output, lease={"ttl_s": TTL_S})
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    command = [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet"]
    started: list[subprocess.Popen] = []
    try:
        first = _start(command)
        started.append(first)
        _wait_for(lambda: _holder(output) is not None, "the first run's lease")
        _, holder = _holder(output)
        assert holder.pid == first.pid and holder.host == socket.gethostname()

        refused = subprocess.run(command, env=_driver_env(), capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1, refused.stderr[-2000:]
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr[-2000:]
        in_use = f"svdbatch: error: output {output} is in use by run {holder.run_id} on {holder.host}"
        assert lines[0].startswith(in_use)
        assert lease_records.utc(holder.started) in lines[0]
        assert first.poll() is None, "the refused run must not disturb the holder"

        taker = _start([*command, "--take-over"])
        started.append(taker)
        _wait_for(lambda: _holder(output)[0] == 2, "the take-over")
        _, taker_holder = _holder(output)
        _, stderr = first.communicate(timeout=120)  # the first run notices at its next renewal and stops
        assert first.returncode != 0
        assert f"lease taken over by run {taker_holder.run_id} on {taker_holder.host}" in stderr, stderr[-2000:]
        folder = lease_records.lease_folder(str(output), {})
        assert lease_records.generations(*folder) == [2]  # the loser removed its record

        assert taker.poll() is None
        os.killpg(taker.pid, signal.SIGKILL)  # the driver and the local Ray cluster it may have started
        taker.communicate()
        # The dead holder's lease is still live, but its process on this machine is gone: the next run takes it at
        # once. A few rows keep it cheap (rows that left the manifest are kept, not pruned).
        assert _holder(output)[1].expires > time.time() + 1
        small = write_manifest(tmp_path / "small.parquet", {"key": KEEP, "image": images[: len(KEEP)]})
        job.write_text(yaml.safe_dump({**spec.model_dump(mode="json"), "manifest": {"path": str(small)}}))
        rerun = subprocess.run(command, env=_driver_env(), capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        took = f"svdbatch: output {output}: took the lease of run {taker_holder.run_id} on {taker_holder.host}"
        assert rerun.stderr.startswith(took) and "whose process has ended" in rerun.stderr, rerun.stderr[-2000:]
        generation, released = _holder(output)
        assert generation == 3 and released.expires == 0.0 and released.run_id != taker_holder.run_id
        assert json.loads((output / "_job" / "summary.json").read_text())["run_id"] == released.run_id
        rows = pq.read_table(output / "metadata").to_pylist()
        assert len({(row["key"], row["variant"]) for row in rows}) == len(rows)
        assert set(KEEP) <= {row["key"] for row in rows if row["status"] == "ok"}
    finally:
        for process in started:  # a stopped driver may leave its local Ray cluster's processes behind
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_live_holder_on_another_machine_is_waited_for_then_refused_in_one_line(tmp_path):
    """The holder renews from "another machine" (this test process, under another host name): the run waits
    --lease-wait seconds, saying so, and refuses; it never starts Ray."""
    images = write_images(tmp_path / "images", 1)
    output = tmp_path / "out"
    spec = make_spec(write_manifest(tmp_path / "m.parquet", {"key": ["k"], "image": images}), output)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    holder = lease.acquire(str(output), {}, "run-far", ttl_s=1.0)
    holder.holder = replace(holder.holder, host="node-elsewhere")
    holder.renew()
    holder.keep(on_lost=lambda error: None)
    try:
        command = [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet", "--lease-wait", "3"]
        began = time.monotonic()
        refused = subprocess.run(command, env=_driver_env(), capture_output=True, text=True, timeout=120)
        assert time.monotonic() - began < 30
    finally:
        holder.release()
    assert refused.returncode == 1
    waiting, error = refused.stderr.strip().splitlines()
    assert waiting.startswith(f"svdbatch: output {output} is held by run run-far on node-elsewhere (pid {os.getpid()}")
    assert waiting.endswith("waiting up to 3 s for its lease to expire (--lease-wait)")
    assert error.startswith(f"svdbatch: error: output {output} is in use by run run-far on node-elsewhere")
    assert "still renewed after waiting 3 s, --lease-wait" in error
    assert not (output / "metadata").exists()
