"""The driver of a whole run stays light: ``svdbatch run`` of a job on the embedded tiny model, in a process of its own
with its own local cluster, renders its video without loading torch, diffusers or transformers in that process (only
the generation actors load them)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import write_job

pytestmark = pytest.mark.slow

HEAVY = ("torch", "diffusers", "transformers")
PROBE = f"""
import sys
from svdbatch.cli import main
code = main(sys.argv[1:])
print("heavy:", sorted({set(HEAVY)!r} & sys.modules.keys()))
sys.exit(code)
"""


def test_a_run_on_the_tiny_model_loads_no_torch_in_the_driver(tmp_path):
    job = write_job(tmp_path, 1)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "run", str(job), "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "svdbatch: 1 ok, 0 failed" in done.stdout
    assert done.stdout.splitlines()[-1] == "heavy: []"
