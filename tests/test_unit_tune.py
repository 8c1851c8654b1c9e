"""``svdbatch tune``'s settings, its sample and its one-line errors; no Ray."""

from __future__ import annotations

import pytest

from svdbatch.cli.tune import parse_tries, sample_keys
from svdbatch.cli.tune_page import breakable
from svdbatch.spec.config import SpecError


def test_tune_settings_one_per_value_and_combined_pairs():
    settings = parse_tries(["render.num_inference_steps=25,4", "model.scheduler=lcm render.max_guidance_scale=1"])
    assert [setting.name for setting in settings] == [
        "reference",
        "render.num_inference_steps=25",
        "render.num_inference_steps=4",
        "model.scheduler=lcm render.max_guidance_scale=1",
    ]
    assert [setting.folder for setting in settings] == ["s0", "s1", "s2", "s3"]
    with pytest.raises(SpecError, match="^--try output.url: tune sets it itself"):
        parse_tries(["output.url=/elsewhere"])
    with pytest.raises(SpecError, match="^--try 'render.fps': expected KEY=V1,V2"):
        parse_tries(["render.fps"])
    keys = [f"sku-{index}" for index in range(50)]
    assert sample_keys(keys, 5) == sample_keys(keys[::-1] + keys[:3], 5) and len(sample_keys(keys, 5)) == 5


def test_a_bad_try_value_is_one_line_before_any_work(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from svdbatch.cli import main

    pq.write_table(pa.table({"key": ["a"], "image": ["/i/a.png"]}), tmp_path / "m.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(f"manifest: {{path: {tmp_path / 'm.parquet'}}}\noutput: {{url: {tmp_path / 'out'}}}\n")
    assert main(["tune", str(job), "--try", "render.fps=8,-3"]) == 2
    err = capsys.readouterr().err
    assert err == "svdbatch: error: --try render.fps=-3: render.fps: -3 is not allowed: " + (
        "Input should be greater than or equal to 1\n"
    )
    assert main(["tune", str(job)]) == 2 and "give at least one --try" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_keys_may_break_only_after_a_separator_and_are_escaped():
    assert breakable("motorcycle_right.png") == "motorcycle_<wbr>right.<wbr>png"
    assert breakable("a/b-c") == "a/<wbr>b-<wbr>c"
    assert breakable("<x>&y") == "&lt;x&gt;&amp;y"  # keys come from untrusted manifests
