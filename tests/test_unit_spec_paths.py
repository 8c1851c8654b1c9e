"""Where a spec comes from and what its paths mean: relative paths resolve against the spec's folder (or its URL's),
and a file that is not a spec is one line. No Ray."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from svdbatch.demo import prepare
from svdbatch.items.manifest import ManifestError, find_files
from svdbatch.spec.config import SpecError
from svdbatch.spec.load import load_spec, resolve_paths

CLI_TIMEOUT_S = 30


def _spec(folder, **sections) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"manifest": {"path": "manifest.parquet"}, "output": {"url": "out"}, **sections}
    (folder / "job.yaml").write_text(yaml.safe_dump(data))
    return str(folder / "job.yaml")


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svdbatch.cli", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=cwd
    )


def test_relative_paths_resolve_against_the_spec_folder_not_the_cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    job = _spec(work)
    pq.write_table(pa.table({"key": ["a"], "image": ["/x.png"]}), work / "manifest.parquet")
    monkeypatch.chdir(tmp_path)  # the parent folder, as in `svdbatch plan work/job.yaml`
    spec = load_spec("work/job.yaml")
    assert spec.manifest.path == str(work / "manifest.parquet")
    assert spec.output.url == str(work / "out")
    assert find_files(spec) == [str(work / "manifest.parquet")]
    assert load_spec(job, ["manifest.path=other.parquet"]).manifest.path == "other.parquet"  # --set: as typed


def test_a_missing_manifest_names_the_path_as_written_and_as_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(_spec(tmp_path / "work"))
    resolved = tmp_path / "work" / "manifest.parquet"
    with pytest.raises(ManifestError) as error:
        find_files(spec)
    assert str(error.value) == f"manifest.path manifest.parquet (resolved: {resolved}): not found"


def test_absolute_paths_urls_hub_ids_and_the_tiny_model_are_left_alone(tmp_path):
    data = {
        "manifest": {"path": "s3://bucket/m/"},
        "output": {"url": "/abs/out"},
        "model": {"source": "stabilityai/stable-video-diffusion-img2vid-xt", "unet": "org/name/unet.safetensors"},
    }
    assert resolve_paths(data, str(tmp_path / "job.yaml")) == (data, {})
    tiny = {"model": {"source": "svdbatch:tiny"}}
    assert resolve_paths(tiny, str(tmp_path / "job.yaml")) == (tiny, {})


def test_model_folders_resolve_when_clearly_paths(tmp_path):
    (tmp_path / "weights" / "svd").mkdir(parents=True)
    data = {"model": {"source": "weights/svd", "unet": "./unets/distilled.safetensors"}}
    resolved, written = resolve_paths(data, str(tmp_path / "job.yaml"))
    assert resolved["model"] == {
        "source": str(tmp_path / "weights" / "svd"),  # exists beside the spec
        "unet": str(tmp_path / "unets" / "distilled.safetensors"),  # ./: a path even before it exists
    }
    assert written == {"model.source": "weights/svd", "model.unet": "./unets/distilled.safetensors"}


def test_a_spec_from_a_url_resolves_against_the_url_folder():
    data = {"manifest": {"path": "manifest.parquet"}, "output": {"url": "../renders/"}, "model": {"source": "org/x"}}
    resolved, _ = resolve_paths(data, "s3://bucket/jobs/catalog.yaml")
    assert resolved["manifest"]["path"] == "s3://bucket/jobs/manifest.parquet"
    assert resolved["output"]["url"] == "s3://bucket/renders"
    assert resolved["model"]["source"] == "org/x"  # no ./: a hub id, the URL's folder is not probed


def test_a_file_url_spec_reads_like_a_path(tmp_path):
    spec = load_spec(f"file://{_spec(tmp_path / 'work')}")
    assert spec.manifest.path == str(tmp_path / "work" / "manifest.parquet")


def test_the_demo_spec_travels_with_its_files(tmp_path, monkeypatch):
    job = prepare(tmp_path / "demo", 1)
    assert yaml.safe_load(job.read_text())["manifest"]["path"] == "manifest.parquet"
    moved = tmp_path / "moved"
    (tmp_path / "demo").rename(moved)
    monkeypatch.chdir(tmp_path)
    spec = load_spec("moved/job.yaml")
    assert find_files(spec) == [str(moved / "manifest.parquet")] and spec.output.url == str(moved / "output")


def test_files_that_are_not_specs_are_named_in_one_line(tmp_path):
    parquet = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"key": ["a"]}), parquet)
    with pytest.raises(SpecError, match=r"manifest.parquet is not a job spec \(YAML\): it looks like a Parquet file"):
        load_spec(parquet)
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xb8\x01\x02 not text")
    with pytest.raises(SpecError, match="blob.yaml is not a job spec .YAML.: it looks like a binary file"):
        load_spec(binary)
    scalar = tmp_path / "notes.yaml"
    scalar.write_text("just a sentence\n")
    with pytest.raises(SpecError, match="notes.yaml is not a job spec: it holds a str, and a job spec is a mapping"):
        load_spec(scalar)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    lines = (result.stderr + result.stdout).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_run_of_a_parquet_manifest_is_one_line(tmp_path):
    pq.write_table(pa.table({"key": ["a"], "image": ["/x.png"]}), tmp_path / "manifest.parquet")
    result = _cli("run", "manifest.parquet", cwd=tmp_path)
    assert result.returncode == 2
    assert _one_line(result) == (
        "svdbatch: error: manifest.parquet is not a job spec (YAML): it looks like a Parquet file; pass the spec, "
        "e.g. svdbatch run job.yaml"
    )


def test_cli_manifest_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    result = _cli("manifest", "phots/", "-o", "m.parquet", cwd=tmp_path)
    assert result.returncode == 1
    assert _one_line(result) == "svdbatch: error: phots/: does not exist (no such folder or prefix)"
    assert not (tmp_path / "m.parquet").exists()


def test_cli_spec_into_a_closed_pipe_ends_quietly():
    """As `svdbatch spec | head`: the reader is gone before the first write (closed while the CLI starts up)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "svdbatch.cli", "spec"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.close()
    assert process.wait(timeout=CLI_TIMEOUT_S) == 1
    assert process.stderr.read() == ""
