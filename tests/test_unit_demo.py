"""``svdbatch demo`` under ``ray job submit``: it refuses to write into Ray's temporary working-dir copy. No Ray."""

from __future__ import annotations

import json

import pytest

from svdbatch.cli import main
from svdbatch.demo import SUBMITTED_JOB_ENV, check_durable
from svdbatch.errors import JobError

# What Ray's job supervisor sets for an entrypoint submitted with --working-dir (job_supervisor._get_driver_env_vars).
SUBMITTED = {SUBMITTED_JOB_ENV: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})}


def test_a_demo_folder_inside_the_working_dir_copy_is_refused(tmp_path):
    with pytest.raises(JobError, match="inside Ray's temporary copy of the job's working dir.*pass --dir"):
        check_durable(tmp_path / "demo-output", tmp_path, SUBMITTED)


def test_a_durable_folder_or_a_plain_shell_is_fine(tmp_path):
    check_durable(tmp_path / "elsewhere", tmp_path / "workdir", SUBMITTED)  # --dir outside the copy
    check_durable(tmp_path / "demo-output", tmp_path, {})  # not a submitted job
    no_working_dir = {SUBMITTED_JOB_ENV: json.dumps({"runtime_env": {}, "metadata": {}})}
    check_durable(tmp_path / "demo-output", tmp_path, no_working_dir)  # submitted without --working-dir


def test_cli_demo_under_a_submitted_job_says_to_pass_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SUBMITTED_JOB_ENV, SUBMITTED[SUBMITTED_JOB_ENV])
    assert main(["demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --dir with a durable path" in err[0]
    assert not (tmp_path / "demo-output").exists()  # refused before anything was written
