"""The layout issue 17 asked for: small modules in service/, runtime/ and tools/, and a request path that
reads in at most eight files, drawn in CONTRACT.md (the layers themselves are held by lint-imports)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_no_module_in_service_runtime_or_tools_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for package in ("service", "runtime", "tools")
        for p in sorted((REPO / package).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_request_path_is_drawn_in_at_most_eight_existing_files() -> None:
    text = (REPO / "CONTRACT.md").read_text()
    section = text[text.index("## Architecture") : text.index("## Inference backends")]
    drawing = section[section.index("reads\nin these") :]
    steps = re.findall(r"^(\d) +((?:service|runtime)/\S+\.py)", drawing, flags=re.M)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) <= 8, steps
    for _, path in steps:
        assert (REPO / path).is_file(), path
    for path in re.findall(r"(?:service|runtime)/[\w/]+\.py", drawing):
        if "<name>" not in path:
            assert (REPO / path).is_file(), path
