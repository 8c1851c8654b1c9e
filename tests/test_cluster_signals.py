"""``svdbatch run`` stopped by signals mid-job, as ``ray job stop``, Kubernetes and Ctrl-C stop it, then rerun.

One job of 24 tiny items, run four times: SIGTERM to the driver, Ctrl-C (SIGINT to its process group), two SIGTERMs,
then a rerun to the end. A stop commits and publishes what finished and says so in one line; nothing is rendered
twice and nothing is lost.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from helpers import make_spec, numbered_manifest, write_images

from svdbatch.store.commit import COMMITS, read_rows

ITEMS = 24  # each stop commits a few batches; the last stopped run must still have work left
STOP_WITHIN_S = 30
NATIVE_DUMPS = ("*** SIGTERM received", "*** SIGINT received", "PC: @", "Traceback")


def _driver_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(job: Path, tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """The driver in a session of its own, as a terminal or a job supervisor starts it; stderr to a file."""
    err = tmp_path / f"{name}.err"
    command = [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet"]
    with err.open("w") as stderr:
        driver = subprocess.Popen(
            command, env=_driver_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr
        )
    return driver, err


def _wait_for_a_commit(driver: subprocess.Popen, output: Path) -> None:
    """Until this run has written a commit file (earlier stops published theirs: the folder starts empty)."""
    commits = output / COMMITS
    deadline = time.time() + 300
    while not (commits.exists() and any(commits.iterdir())):
        assert driver.poll() is None, "the driver finished before it could be stopped"
        assert time.time() < deadline, "no commit within 300 s"
        time.sleep(0.2)


def _kill_group(driver: subprocess.Popen) -> None:
    """Whatever is left of the driver's process group (the local Ray cluster it started, after a hard exit)."""
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _stopped(driver: subprocess.Popen, err: Path) -> tuple[str, float]:
    """Wait for the driver; returns its stderr and how long it took from now."""
    began = time.monotonic()
    try:
        driver.wait(timeout=STOP_WITHIN_S)
    finally:
        took = time.monotonic() - began
        _kill_group(driver)
    stderr = err.read_text()
    assert not [dump for dump in NATIVE_DUMPS if dump in stderr], stderr[-3000:]
    return stderr, took


def _graceful(stderr: str, signame: str, output: Path, before: int) -> None:
    """One stop line, and the count it gives is what this run published (its commit files merged)."""
    lines = [line for line in stderr.splitlines() if line.startswith("svdbatch: stopped by")]
    assert len(lines) == 1, stderr[-3000:]
    found = re.fullmatch(
        rf"svdbatch: stopped by {signame}: (\d+) videos committed this run; run the same command again to resume",
        lines[0],
    )
    assert found, lines
    assert not any((output / COMMITS).iterdir())
    assert read_rows(str(output)).num_rows == before + int(found[1]) and int(found[1]) > 0


def test_signals_stop_cleanly_and_a_rerun_finishes_without_duplicates(tmp_path):
    images = write_images(tmp_path / "images", 4)
    manifest = numbered_manifest(tmp_path, images, ITEMS)
    output = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(make_spec(manifest, output).model_dump(mode="json")))

    # SIGTERM to the driver alone: what `ray job stop` and Kubernetes send.
    driver, err = _start(job, tmp_path, "term")
    _wait_for_a_commit(driver, output)
    driver.send_signal(signal.SIGTERM)
    stderr, took = _stopped(driver, err)
    assert driver.returncode == 143, stderr[-3000:]
    _graceful(stderr, "SIGTERM", output, 0)
    print(f"SIGTERM: stopped in {took:.1f} s")

    # Ctrl-C: SIGINT to the whole process group, Ray's own processes included.
    before = read_rows(str(output)).num_rows
    driver, err = _start(job, tmp_path, "int")
    _wait_for_a_commit(driver, output)
    os.killpg(driver.pid, signal.SIGINT)
    stderr, took = _stopped(driver, err)
    assert driver.returncode == 130, stderr[-3000:]
    _graceful(stderr, "SIGINT", output, before)
    print(f"SIGINT: stopped in {took:.1f} s")

    # A second signal ends the driver at once, with one short line and the same exit status.
    driver, err = _start(job, tmp_path, "twice")
    _wait_for_a_commit(driver, output)
    driver.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)
    stderr, took = _stopped(driver, err)
    assert driver.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "svdbatch: SIGTERM again: exiting now"
    assert took < 5, took
    print(f"second SIGTERM: exited in {took:.1f} s")

    # The hard exit left its lease and its last commit files: the rerun takes over the dead run's lease.
    rerun = subprocess.run(
        [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet", "--take-over"],
        env=_driver_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = read_rows(str(output)).to_pylist()
    assert sorted((row["key"], row["variant"]) for row in rows) == [(f"item-{i:03d}", 0) for i in range(ITEMS)]
    assert {row["status"] for row in rows} == {"ok"}
    assert len(list((output / "videos").rglob("*.mp4"))) == ITEMS
