"""Paths and small helpers shared by the docs generators."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"


def write_if_changed(path: Path, text: str | bytes) -> bool:
    """Write ``path`` only when its content changes, so Sphinx re-reads only what changed."""
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # never leave a half-written page behind
    return True


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table; pipes inside cells are escaped."""

    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
