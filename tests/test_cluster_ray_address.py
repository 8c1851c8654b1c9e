"""Joining a cluster through RAY_ADDRESS: a head with Ray's token authentication on takes `ray job submit` and
`svdbatch run` that bring its token; without the token, or at an address where no head answers, `svdbatch` fails in
one line naming what to set, within 30 s."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import make_spec, stop_group, write_images, write_manifest
from s3_server import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ONE_LINE_S = 30


def _client_env(home: Path, **variables: str) -> dict[str, str]:
    """The caller's environment without any RAY_ setting, an empty HOME (no ~/.ray/auth_token), plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    env.update(variables)
    return env


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def token_head():
    """A `ray start --head` with token authentication, its own temp dir (so `address="auto"` elsewhere never finds
    it) and ports, in a process group of its own: stopping it stops this cluster and no other."""
    base = Path(tempfile.mkdtemp(prefix="svdb-auth-", dir="/tmp"))  # short: Ray's socket paths live under it
    token = uuid.uuid4().hex
    gcs, dashboard = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    command = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--dashboard-host", "127.0.0.1"]
    command += [f"--temp-dir={base / 'ray'}", *(f"{flag}={port}" for flag, port in ports.items())]
    (base / "home").mkdir()
    env = _client_env(base / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    head = subprocess.Popen(
        command, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 180
        while not _listens(dashboard):  # the dashboard starts after the GCS
            assert head.poll() is None, "ray start --head exited"
            assert time.time() < deadline, "the token head did not open its dashboard in 180 s"
            time.sleep(1)
        yield {
            "gcs": f"127.0.0.1:{gcs}",
            "dashboard": f"http://127.0.0.1:{dashboard}",
            "token": token,
            "home": base / "home",
        }
    finally:
        stop_group(head)
        shutil.rmtree(base, ignore_errors=True)


def _job(folder: Path) -> Path:
    images = write_images(folder / "images", 1)
    spec = make_spec(write_manifest(folder / "m.parquet", {"key": ["k"], "image": images}), folder / "out")
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return job


def _svdbatch(*args: str, env: dict[str, str], timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "svdbatch", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return done, time.monotonic() - began


def test_ray_job_submit_of_the_demo_with_the_token_completes(token_head, tmp_path):
    env = _client_env(token_head["home"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token_head["token"])
    submit = [str(BIN / "ray"), "job", "submit", "--address", token_head["dashboard"], "--working-dir", "."]
    submit += ["--runtime-env", "jobs/runtime_env.yaml", "--", "python", "-m", "svdbatch", "demo"]
    submit += ["--dir", str(tmp_path / "demo"), "--images", "2", "--quiet"]
    for _ in range(30):  # the job agent comes up a few seconds after the dashboard
        submitted = subprocess.run(submit, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if "No available agent" not in submitted.stdout + submitted.stderr:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in (submitted.stdout + submitted.stderr).lower() and "4 ok, 0 failed" in submitted.stdout
    rows = pq.read_table(tmp_path / "demo" / "output" / "metadata").to_pylist()
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}


def test_svdbatch_run_with_ray_address_and_the_token_joins_the_head(token_head, tmp_path):
    env = _client_env(
        token_head["home"], RAY_ADDRESS=token_head["gcs"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token_head["token"]
    )
    done, _ = _svdbatch("run", str(_job(tmp_path)), "--quiet", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 ok, 0 failed, 0 already done" in done.stdout


NEEDS_TOKEN = (
    "the Ray head requires token authentication: set RAY_AUTH_MODE=token and give the cluster's token in "
    "RAY_AUTH_TOKEN, or in a file named by RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
)


@pytest.mark.parametrize(
    ("command", "variables", "says"),
    [
        ("run", {}, f"RAY_ADDRESS={{gcs}}: {NEEDS_TOKEN}"),
        ("plan", {}, f"RAY_ADDRESS={{gcs}}: {NEEDS_TOKEN}"),
        ("plan", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}, "the Ray head refused this process's"),
        ("plan", {"RAY_AUTH_MODE": "token"}, "error: RAY_AUTH_MODE=token but no token found: give the cluster's token"),
    ],
    ids=["run-without-token", "plan-without-token", "wrong-token", "token-mode-without-token"],
)
def test_without_the_right_token_svdbatch_fails_in_one_line_naming_what_to_set(
    token_head, tmp_path, command, variables, says
):
    env = _client_env(token_head["home"], RAY_ADDRESS=token_head["gcs"], **variables)
    done, took = _svdbatch(command, str(_job(tmp_path)), env=env, timeout=120)
    assert done.returncode == 1 and took < ONE_LINE_S, (took, done.stderr[-3000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says.format(gcs=token_head["gcs"]) in lines[0], done.stderr[-3000:]
    assert not (tmp_path / "out" / "metadata").exists()


def test_verbose_shows_the_trace_of_the_one_line(token_head, tmp_path):
    env = _client_env(token_head["home"], RAY_ADDRESS=token_head["gcs"])
    done, _ = _svdbatch("plan", str(_job(tmp_path)), "--verbose", env=env, timeout=120)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and NEEDS_TOKEN in done.stderr.strip().splitlines()[-1]


def test_an_address_where_no_head_answers_fails_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "home").mkdir()
    done, took = _svdbatch("plan", str(_job(tmp_path)), env=_client_env(tmp_path / "home", RAY_ADDRESS=address))
    assert done.returncode == 1 and took < ONE_LINE_S, (took, done.stderr[-3000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"svdbatch: error: RAY_ADDRESS={address}: no Ray head answers there (UNAVAILABLE: ")
    assert "Connection refused" in lines[0] and "6379 by default" in lines[0]
