"""The user's guide stays a guide: short, complete on settings, and naming behaviour, not tickets."""

from __future__ import annotations

import re

from helpers import ROOT

from service.config import Settings

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_readme_is_a_guide_of_at_most_300_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_readme_lists_every_setting():
    text = README.read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`NEWSDESK_{name.upper()}`" not in text]
    assert not missing, f"settings missing from README's table: {missing}"


def test_no_issue_numbers_in_the_docs():
    pattern = re.compile(r"\bissue ?#?\d+|(?<![\w/&])#\d+\b", re.IGNORECASE)
    for path in [README, ROOT / "ARCHITECTURE.md", *DOCS]:
        found = pattern.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.name}: {found}"


def test_the_benchmark_table_has_one_home_with_its_markers():
    from benchmarks.report import END_MARK, START_MARK

    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert text.count(START_MARK) == 1 and text.count(END_MARK) == 1
    assert START_MARK not in README.read_text(encoding="utf-8")
