"""The benchmarks run and print their tables (at toy sizes), so they cannot rot between GPU runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_benchmark_runs_reduced_on_cpu():
    out = _run("gpu.py", "--reduced", "--items", "2", "--batches", "2", "--compile", "off")
    lines = [line for line in out.splitlines() if line.startswith(("bare diffusers", "svdbatch"))]
    assert len(lines) == 3 and "64x64, 8 frames, 4 steps" in out


def test_cpu_benchmark_prints_both_paths_and_the_ratio():
    out = _run("cpu_throughput.py", "--shapes", "64x64x8x2:4")
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "64x64x8x2" and row[1] == "4" and float(row[2]) > 0 and float(row[3]) > 0


def test_expand_benchmark_prints_expansion_and_decision_costs():
    out = _run("expand.py", "--rows", "400")
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("expand_batch, 400 rows x 1 variants: ")
    assert lines[3].startswith("decision, 400 items changed: ") and lines[3].endswith(" CPU-s")


def test_memory_benchmark_prints_peaks_for_each_size():
    out = _run("memory.py", "--rows", "8,16")
    assert "driver peak growth 8 -> 16 rows" in out and "max worker MiB" in out


def test_quality_benchmark_prints_both_costs():
    out = _run("quality.py", "--size", "64x64x8", "--repeats", "1")
    assert "64x64, 8 frames: quality.measure" in out and "measure share of writer CPU time" in out


def test_scale_benchmark_renders_only_the_two_new_items():
    out = _run("scale.py", "--rows", "1000")
    row = out.strip().splitlines()[-1].split()
    assert row[:2] == ["new", "1000"] and row[-3:-1] == ["2", "998"] and row[-1].isdigit()  # rendered, done, stderr


def test_step_cache_benchmark_prints_flop_and_wall_ratios():
    out = _run("step_cache.py", "--items", "1", "--steps", "3", "--models", "tiny")
    default = next(line for line in out.splitlines() if "(default)" in line)
    assert float(default.split()[-2].rstrip("x")) >= 1.6  # UNet FLOP ratio on the full SVD-XT architecture
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "tiny" and row[1] == "64x64x8" and float(row[4]) > 0 and float(row[5].rstrip("x")) > 0


def test_catalog_sync_benchmark_prints_lookup_rate_and_copy_share():
    out = _run("catalog_sync.py", "--objects", "20", "--scale", "100000")
    assert "version lookups, 20 objects" in out and "storage.versions" in out
    assert "model copy (SVD-XT layout / 100000)" in out and "in 9 files" in out


def test_ceiling_benchmark_prints_stage_costs_and_a_throughput_row():
    sizes = ["--size", "64x64x4", "--gpus", "2", "--gpu-seconds", "0.1", "--items", "4"]
    out = _run("ceiling.py", *sizes, "--memory-items", "", "--tiny-items", "0")
    assert "CPU-seconds per video at 64x64x4" in out and "SVD-XT, 4 steps, H100 floor" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("   2 "))
    assert row[:3] == ["2", "0.1", "4"] and float(row[3]) > 0


def test_device_check_runs_its_steps_reduced_on_cpu():
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "device_check.sh"), "--reduced"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("configuration") :].splitlines()
    names = ["bare diffusers", "default", "step cache", "compile_unet", "4 steps, no CFG"]
    assert [line.startswith(name) for line, name in zip(table[1:], names, strict=True)] == [True] * 5
    assert all(line.split()[-2] == "3" and "n/a (CPU)" in line for line in table[1:])
