"""``svdbatch manifest``'s inputs: a --params CSV's bad values and stray keys, a missing source, and the README's
smallest spec reading what the command writes. No Ray."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import write_images

from svdbatch.items.manifest import inspect
from svdbatch.items.scan import build_manifest, read_params
from svdbatch.spec.load import build_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def _csv(tmp_path, text: str) -> str:
    path = tmp_path / "params.csv"
    path.write_text(text)
    return str(path)


def test_a_bad_render_value_names_the_file_line_column_and_kind(tmp_path):
    url = _csv(tmp_path, "key,fps,motion_bucket_id\na.png,8,100\nb.png,abc,120\n")
    with pytest.raises(ValueError) as error:
        read_params(url, {})
    assert str(error.value) == f"{url} line 3, column fps: 'abc' is not a number"


def test_a_bad_free_column_value_is_checked_against_the_column_first_value(tmp_path):
    url = _csv(tmp_path, "key,split\na.png,train\nb.png,test\nc.png,7\n")
    with pytest.raises(ValueError) as error:
        read_params(url, {})
    assert str(error.value) == f"{url} line 4, column split: '7' is not text (like line 2)"


def test_good_params_are_typed_and_blank_cells_left_out(tmp_path):
    url = _csv(tmp_path, "key,fps,noise_aug_strength,split\na.png,8,0.1,train\nb.png,,2,test\n")
    assert read_params(url, {}) == {
        "a.png": {"fps": 8, "noise_aug_strength": 0.1, "split": "train"},
        "b.png": {"noise_aug_strength": 2, "split": "test"},
    }


def test_csv_keys_that_match_no_image_fail_and_write_nothing(tmp_path):
    write_images(tmp_path / "images", 2)
    params = {"img-000.png": {"fps": 8}, "img-009.png": {"fps": 9}, "shoes/img-000.png": {"fps": 9}}
    with pytest.raises(ValueError) as error:
        build_manifest(str(tmp_path / "images"), str(tmp_path / "m.parquet"), params=params)
    assert str(error.value) == (
        f"--params: 2 key(s) match no image under {tmp_path / 'images'} (keys are image paths relative to it): "
        "img-009.png, shoes/img-000.png"
    )
    assert not (tmp_path / "m.parquet").exists()


def test_a_missing_source_folder_says_it_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match=r"phots: does not exist \(no such folder or prefix\)"):
        build_manifest(str(tmp_path / "phots"), str(tmp_path / "m.parquet"))


def test_the_readme_smallest_spec_reads_what_svdbatch_manifest_writes(tmp_path):
    text = README.read_text()
    block = re.search(r"The smallest one:\n\n```yaml\n(.*?)```", text, re.S).group(1)
    data = yaml.safe_load(block)
    write_images(tmp_path / "images", 2)
    assert build_manifest(str(tmp_path / "images"), str(tmp_path / "m.parquet")) == 2
    data["manifest"]["path"] = str(tmp_path / "m.parquet")
    info = inspect(build_spec(data))  # checks the key and image columns the spec names exist
    assert info.rows == 2
