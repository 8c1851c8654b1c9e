"""What a user sees from the commands that start Ray: svdbatch's own lines (and on a terminal Ray Data's live bars),
never Ray's log lines. Each command runs in its own process with its own local cluster, piped and on a pty."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from helpers import write_job

pytestmark = pytest.mark.slow

RAY_NOISE = re.compile(
    r"(INFO|WARNING|ERROR)\s+\S+\.py:\d+ --"  # Ray's Python loggers
    r"|^\[\d{4}-\d\d-\d\d "  # the native core worker's lines
    r"|\(\w+ pid=\d+"  # workers' output relayed to the driver
    r"|progress UI|Truncating long operator name|non-interactive terminal"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COMMAND = [sys.executable, "-m", "svdbatch.cli"]


def noise(text: str) -> list[str]:
    """The lines of ``text`` (bars' escape codes removed) that come from Ray's logging."""
    lines = re.split(r"[\r\n]+", ANSI.sub("", text))
    return [line for line in lines if RAY_NOISE.search(line)]


def on_pty(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; its exit status and everything it showed."""
    main, child = pty.openpty()
    process = subprocess.Popen([*COMMAND, *argv], stdin=child, stdout=child, stderr=child)
    os.close(child)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                shown += chunk
            elif process.poll() is not None:  # exited, and nothing more came for half a second
                break
        else:
            process.kill()
            pytest.fail(f"{argv} still running after {timeout} s: {shown[-2000:]!r}")
    finally:
        os.close(main)
    return process.wait(), shown.decode(errors="replace")


def test_plan_and_run_show_no_ray_log_lines_piped_or_on_a_terminal(tmp_path):
    job = write_job(tmp_path, 1)
    piped = subprocess.run([*COMMAND, "plan", str(job)], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert piped.stderr == ""
    heads = [line.split(":")[0] for line in piped.stdout.splitlines()]
    assert heads == ["manifest", "to render", "to remove", "estimate", "basis"]
    for argv in (["plan", str(job)], ["run", str(job)]):
        status, shown = on_pty(argv, timeout=300)
        assert status == 0, shown[-3000:]
        assert noise(shown) == [], argv
    assert "svdbatch: 1 ok, 0 failed" in shown and "estimate:" not in shown
