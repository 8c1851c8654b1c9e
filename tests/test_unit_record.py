"""What a run reports, without Ray: the progress line."""

from __future__ import annotations

from svdbatch.commit import Counts
from svdbatch.record import Progress


def test_progress_line_shows_done_of_total_and_an_eta(capsys):
    progress = Progress(total=10, enabled=True, every_s=0)
    progress.update(Counts(rendered=3, failed=1))
    line = capsys.readouterr().err
    assert line.startswith("svdbatch: 4/10 items (1 failed),") and "ETA" in line
    Progress(total=10, enabled=False, every_s=0).update(Counts(rendered=3))
    assert capsys.readouterr().err == ""
