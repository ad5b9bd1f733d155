"""README.md's sections: their commands and text, for the tests that check the README's claims
(``from readme_sections import readme_section``)."""

from __future__ import annotations

import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section(heading: str) -> tuple[str, list[list[str]]]:
    """The text under ``### heading`` (to the next heading, whitespace collapsed) and the ``wsi-hcc`` commands
    of its bash blocks, split as a shell would."""
    lines = README.read_text().splitlines()
    start = lines.index(f"### {heading}") + 1
    fenced = [False]
    for line in lines[1:]:  # whether each line is inside a code block, where "#" starts a comment, not a heading
        fenced.append(fenced[-1] != line.startswith("```"))
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#") and not fenced[i]), len(lines))
    body = "\n".join(lines[start:end])
    commands = [shlex.split(line) for line in body.replace("\\\n", " ").splitlines() if line.startswith("wsi-hcc ")]
    return " ".join(body.split()), commands
