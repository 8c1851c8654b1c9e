"""What every section of the job spec shares: the strict base model and the did-you-mean of its messages."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every spec model: unknown fields fail (a typo is named before any work) and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def closest(word: str, choices: list[str]) -> str | None:
    """The choice nearest to a misspelt ``word``, or None: the did-you-mean of every spec message."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None
