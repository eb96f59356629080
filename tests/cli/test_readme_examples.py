"""Every ``atelier …`` line in the README's bash blocks runs as written, in order, as one user session.

They run through bash (so globs like ``photos/*.jpg`` expand as in a terminal) in a fresh data dir with the tiny
offline models, each one expected to exit 0. Commands that start a long-running server are skipped, with the reason.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import noise_png

ROOT = Path(__file__).resolve().parents[2]
# Commands that run until stopped (the Discord bot needs a token and Discord; a worker waits for queued jobs).
SKIPPED = {
    "atelier run": "starts the bot, a worker and Redis and runs until Ctrl-C",
    "atelier bot": "needs a Discord token and Discord",
    "atelier worker": "serves the queue until Ctrl-C (`--check` is tested in tests/worker)",
}


def readme_examples() -> list[tuple[str, bool]]:
    """``(command, refused)`` for each ``atelier`` line in the README's bash code blocks, trailing comment removed;
    ``refused``: the comment says the command is refused (it must then exit 1 with its reason)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for raw in block.splitlines():
            line, _, comment = raw.strip().partition("  #")
            line = line.strip()
            if line.startswith("atelier ") or line.startswith("ATELIER_") and " atelier " in line:
                examples.append((line, comment.strip().startswith("refused")))
    return examples


def test_readme_has_cli_examples() -> None:
    examples = [line for line, _ in readme_examples()]
    assert any(e.startswith("atelier train ") for e in examples)
    assert any(e.startswith("atelier generate ") for e in examples)


@pytest.mark.slow
def test_readme_cli_examples_run_as_written(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(12):  # the README adds photos/*.jpg: twelve real JPEGs
        Image.open(io.BytesIO(noise_png(seed, size=320))).convert("RGB").save(photos / f"p{seed:02d}.jpg", quality=90)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_DATA_DIR=str(tmp_path / "data"),
               ATELIER_MODELS_DIR=str(tmp_path_factory.getbasetemp() / "readme-models"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               COLUMNS="120")
    ran = []
    for line, refused in readme_examples():
        if any(line.startswith(prefix) for prefix in SKIPPED):
            continue
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        expected = 1 if refused else 0
        assert proc.returncode == expected, (f"README example exited {proc.returncode}, not {expected}: {line}\n"
                                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        if refused:
            assert "error" in (proc.stdout + proc.stderr).lower()
        ran.append(line)
    assert any(line.startswith("atelier train ") for line in ran)
    assert len(list((tmp_path / "out").glob("*.png"))) == 3  # `--count 2 --out out/`, then one group image
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_module_map_names_every_module() -> None:
    """The README's module map matches the tree: every module of the five packages is named in it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**Module map**"):text.index("**Module map**") + 20_000]
    for pkg in ("storage", "trainer", "worker", "bot", "cli"):
        line = next(p for p in section.split("\n- ") if p.lstrip("- ").startswith(f"**{pkg}/**"))
        named = set(re.findall(r"`([\w/]+)`", line))
        modules = {p.relative_to(ROOT / pkg).as_posix()[:-3] for p in (ROOT / pkg).rglob("*.py")
                   if "migrations" not in p.parts and p.name != "__init__.py"}
        assert modules <= named, f"README module map misses {sorted(modules - named)} in {pkg}/"
