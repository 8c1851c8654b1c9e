"""The command line without Ray: start-up cost, --version, help texts. Each check runs a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svdbatch import __version__
from svdbatch.cli import main
from svdbatch.spec.config import SpecError
from svdbatch.spec.load import build_spec

HEAVY = ("torch", "diffusers", "transformers", "ray")


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from svdbatch.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(result.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["spec"], ["manifest", "--help"], ["report", "--help"]])
def test_light_commands_import_no_torch_diffusers_or_ray(argv):
    loaded = _modules_after(argv)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_manifest_and_report_commands_stay_light(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"png or not, the listing does not decode it")
    loaded = _modules_after(["manifest", str(tmp_path / "images"), "-o", str(tmp_path / "m.parquet")])
    assert (tmp_path / "m.parquet").exists()
    assert not loaded & set(HEAVY)
    assert not _modules_after(["report", str(tmp_path / "no-output")]) & set(HEAVY)


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"svdbatch {__version__}"


def test_unknown_field_points_at_a_command_that_exists(capsys):
    with pytest.raises(SpecError) as caught:
        build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}, "render": {"colour": 1}})
    hint = str(caught.value)
    assert "'svdbatch spec'" in hint
    command = hint.split("'")[1].split()[1:]
    assert main(command) == 0 and "render.fps" in capsys.readouterr().out


def test_native_notice_filter_drops_only_rays_object_store_notice():
    from svdbatch.run.console import _forward

    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    notice = b"[2026-11-29 03:51:23,654 E 9928 9928] core_worker.cc:2465: Actor with class name: 'MapWorker' and ID: "
    notice += b"'5b47' has constructor arguments in the object store and max_restarts > 0. If the arguments ...\n"
    kept = b"[2026-11-29 03:51:24,000 E 1 1] raylet_client.cc:1: a real native error\n"
    os.write(source_write, notice + b"svdbatch: 2/3 items\n" + kept + b"\rbar 50%")
    os.close(source_write)
    _forward(source_read, target_write)
    os.close(target_write)
    assert os.read(target_read, 65536) == b"svdbatch: 2/3 items\n" + kept + b"\rbar 50%"


def test_a_user_error_deep_in_a_chain_is_shown_as_its_line_and_verbose_shows_its_causes(tmp_path, capsys):
    from svdbatch.errors import root_message
    from svdbatch.storage import StorageError

    try:
        try:
            raise FileNotFoundError("s3://b/x: NoSuchKey")
        except FileNotFoundError as missing:
            raise StorageError("output s3://b/x is not writable: NoSuchKey") from missing
    except StorageError as error:
        wrapped = RuntimeError("Ray task failed")
        wrapped.__cause__ = error
        assert root_message(wrapped) == "output s3://b/x is not writable: NoSuchKey"
    assert root_message(RuntimeError("boom\nmore")) == "RuntimeError: boom (--verbose for the full trace)"

    manifest = tmp_path / "missing.parquet"
    job = tmp_path / "job.yaml"
    job.write_text(f"manifest: {{path: {manifest}}}\noutput: {{url: {tmp_path / 'out'}}}\n")
    assert main(["plan", str(job), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith(f"svdbatch: error: manifest.path {manifest}: not found")
    assert "Traceback" in err and "ManifestError" in err


def test_spec_mistakes_are_answered_before_torch_or_ray_load(tmp_path):
    """Timing-free: what answers a bad spec or a missing manifest must not import torch, diffusers or Ray."""
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"found is enough: the footer is read later")
    job = tmp_path / "job.yaml"
    job.write_text(f"manifest: {{path: {manifest}}}\noutput: {{url: {tmp_path / 'out'}}}\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text(job.read_text() + "rendr: {fps: 8}\n")
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"manifest: {{path: {tmp_path / 'none.parquet'}}}\noutput: {{url: {tmp_path / 'out'}}}\n")
    for argv in (
        ["run", str(typo)],
        ["plan", str(typo)],
        ["run", str(job), "--set", "render.num_inference_step=3"],
        ["plan", str(missing)],
        ["run", str(missing)],
    ):
        assert not _modules_after(argv) & set(HEAVY), argv


def test_help_explains_set_plan_defaults_and_run_exit_codes(capsys):
    def help_of(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    for command in ("run", "plan", "demo"):
        assert "--set SECTION.FIELD=VALUE Override one spec field" in help_of(command)
    plan = help_of("plan")
    assert "not given: 8, assumed" in plan and "not given: H100, assumed" in plan
    assert "delete its videos" not in plan and "plan deletes nothing" in plan
    run = help_of("run")
    for code in ("0 every item", "1 some items failed", "2 bad command line or job spec", "130 interrupted", "143"):
        assert code in run
