"""Counts in messages read as English: one slide, two slides."""

from __future__ import annotations

from wsi_hcc.utils.words import counted


def test_one_is_singular_and_every_other_count_plural():
    assert [counted(n, "slide") for n in (0, 1, 2)] == ["0 slides", "1 slide", "2 slides"]
    assert counted(1, "patch", "patches") == "1 patch" and counted(5, "patch", "patches") == "5 patches"
