"""Print the README's module map: each module of the five packages with its docstring's first line.

    python scripts/module_map.py     # paste over the map under "Module map" in README.md
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "trainer", "worker", "bot", "cli")


def summary(doc: str, width: int = 60) -> str:
    first = doc.strip().split("\n")[0].strip().rstrip(".")
    for sep in (": ", " — ", "; ", " ("):
        if len(first) > width and sep in first:
            first = first.split(sep)[0]
    return textwrap.shorten(first, width, placeholder=" …") if len(first) > width else first


def module_map() -> str:
    lines = []
    for pkg in PACKAGES:
        parts = []
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts or path.name == "__init__.py":
                continue
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            name = path.relative_to(ROOT / pkg).as_posix()[:-3]
            parts.append(f"`{name}` ({summary(doc)})" if doc else f"`{name}`")
        lines.append(textwrap.fill(f"- **{pkg}/**: " + "; ".join(parts) + ".", 116, subsequent_indent="  ",
                                   break_on_hyphens=False, break_long_words=False))
    return "\n".join(lines)


if __name__ == "__main__":
    print(module_map())
