"""The ``atelier`` CLI for datasets, Elements and the database, through typer's runner and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import noise_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke the CLI in-process with a private data dir (SQLite); returns (exit code, parsed JSON or text)."""
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("ATELIER_")]:
        monkeypatch.delenv(var)
    env = {"ATELIER_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, as_json: bool = True):
        argv = (["--json"] if as_json else []) + list(args)
        result = runner.invoke(app, argv, env=env, input=input)
        if as_json:
            try:
                return result.exit_code, json.loads(result.stdout)
            except json.JSONDecodeError:
                raise AssertionError(f"not JSON (exit {result.exit_code}): {result.output!r}") from result.exception
        return result.exit_code, result.output

    return invoke


def _images(folder: Path, seeds: list[int]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for s in seeds:
        p = folder / f"img{s}.png"
        p.write_bytes(noise_png(s))
        paths.append(p)
    return paths


def test_dataset_lifecycle_with_json(cli, tmp_path: Path) -> None:
    code, data = cli("dataset", "create", "Cats", "--description", "my cats")
    assert code == 0 and data["dataset"]["name"] == "Cats"
    code, data = cli("dataset", "create", "cats")
    assert code == 1 and data["ok"] is False and data["error"]["code"] == "conflict"

    imgs = _images(tmp_path / "pics", [1, 2, 3])
    (tmp_path / "pics" / "img2.txt").write_text("a striped cat")
    (tmp_path / "pics" / "notes.md").write_text("not an image")
    code, data = cli("dataset", "add", "cats", str(tmp_path / "pics"), str(imgs[0]))
    assert code == 0
    assert (data["added"], data["refused"], data["image_count"]) == (3, 2, 3)
    by_name = {(f["filename"], f["status"]) for f in data["files"]}
    assert ("notes.md", "refused") in by_name and ("img1.png", "refused") in by_name
    dup = next(f for f in data["files"] if f["filename"] == "img1.png" and f["status"] == "refused")
    assert "#1 (img1.png)" in dup["reason"]

    code, data = cli("dataset", "show", "CATS")
    assert code == 0 and [i["caption"] for i in data["dataset"]["images"]] == ["", "a striped cat", ""]
    assert data["limits"]["flux"] == {"count": 3, "max": 50}
    code, data = cli("dataset", "caption", "cats", "3", "@everyone on a mat")
    assert code == 0 and data["image"]["caption"] == "@everyone on a mat"
    code, data = cli("dataset", "remove", "cats", "1")
    assert code == 0 and [r["index"] for r in data["removed"]] == [1]
    code, data = cli("dataset", "list")
    assert code == 0 and [(d["name"], d["image_count"]) for d in data["datasets"]] == [("Cats", 2)]
    assert data["storage"]["limit_bytes"] == 2 * 1024**3 and 0 < data["storage"]["used_bytes"] < 1024**2

    code, data = cli("dataset", "lint", "cats", "--category", "style", "--base-model", "flux-dev")
    assert code == 0 and any(f["code"] == "too_few_images" for f in data["findings"])
    code, data = cli("dataset", "sheet", "cats", "-o", str(tmp_path / "sheet.png"))
    assert code == 0 and (tmp_path / "sheet.png").read_bytes()[:4] == b"\x89PNG"
    code, data = cli("dataset", "export", "cats")
    assert code == 0 and Path(data["path"]).name == "Cats.zip"
    with zipfile.ZipFile(tmp_path / "Cats.zip") as zf:
        assert sorted(zf.namelist()) == ["0001.png", "0001.txt", "0002.png", "0002.txt"]

    code, data = cli("dataset", "import", "copy", str(tmp_path / "Cats.zip"), "--create")
    assert code == 0 and data["added"] == 2
    code, data = cli("dataset", "rename", "copy", "Copy Two")
    assert code == 0 and data["dataset"]["name"] == "Copy Two"
    code, data = cli("dataset", "delete", "copy two")
    assert code == 1 and "--yes" in data["error"]["message"]
    code, data = cli("dataset", "delete", "copy two", "--yes")
    assert code == 0 and data["deleted"]["image_count"] == 2


def test_user_errors_are_one_line_with_exit_code_1(cli, tmp_path: Path) -> None:
    code, text = cli("dataset", "show", "nope", as_json=False)
    assert code == 1
    assert text.strip().splitlines() == [text.strip()] and text.startswith("error: ")
    assert "nope" in text and "dataset list" in text
    code, text = cli("dataset", "create", "", as_json=False)
    assert code == 1 and text.startswith("error: ")
    cli("dataset", "create", "x")
    code, text = cli("dataset", "add", "x", str(_images(tmp_path / "p", [1])[0]), str(tmp_path / "missing.png"),
                     as_json=False)
    assert code == 0 and "added" in text and "refused" in text and "missing.png" in text
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    code, text = cli("dataset", "add", "x", str(bad), as_json=False)
    assert code == 1 and "0 added, 1 refused" in text  # nothing added: exit 1, reason per file
    code, data = cli("dataset", "remove", "x", "two")
    assert code == 1 and "two" in data["error"]["message"]


def test_users_are_separate_and_private(cli, tmp_path: Path) -> None:
    assert cli("--user", "alice", "dataset", "create", "mine")[0] == 0
    code, data = cli("--user", "bob", "dataset", "show", "mine")
    assert code == 1 and data["error"]["code"] == "not_found"
    assert cli("--user", "bob", "dataset", "list")[1]["datasets"] == []
    code, data = cli("--user", "bad name!", "dataset", "list")
    assert code == 1 and data["error"]["code"] == "invalid"


def test_element_and_db_commands(cli) -> None:
    code, data = cli("db", "upgrade")
    assert code == 0 and data["to"] is not None
    code, data = cli("db", "current")
    assert code == 0 and data["revision"] == data["revision"] and data["revision"]
    assert cli("element", "list") == (0, {"ok": True, "elements": []})
    code, data = cli("element", "browse")
    assert code == 0 and data["total"] == 0
    code, data = cli("element", "info", "#1")
    assert code == 1 and data["error"]["code"] == "not_found"


def test_dataset_commands_do_not_import_torch(tmp_path: Path) -> None:
    """`atelier dataset …` in a fresh interpreter: works, and never loads torch (or discord)."""
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "sys.argv = ['atelier', '--json', 'dataset', 'list']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules and 'discord' not in sys.modules, 'heavy import'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True, "datasets": [],
                                       "storage": {"used_bytes": 0, "limit_bytes": 2 * 1024**3}}


def test_dataset_groups_from_the_cli(cli, tmp_path: Path) -> None:
    from cli.generate_cmd import parse_element

    assert cli("dataset", "create", "duo")[0] == 0
    assert cli("dataset", "add", "duo", *map(str, _images(tmp_path / "g", [1, 2, 3, 4])))[0] == 0
    code, data = cli("dataset", "group", "duo", "outfit-red", "1-2", "--trigger", "red dress")
    assert code == 0 and data["group"]["image_count"] == 2 and data["group"]["trigger"] == "red dress"
    code, data = cli("dataset", "group", "duo", "blue", "3,4", "--repeats", "5")
    assert code == 0 and data["group"]["repeats"] == 5
    code, text = cli("dataset", "show", "duo", as_json=False)
    assert code == 0 and "outfit-red" in text and "red dress" in text and "repeats 5" in text
    code, data = cli("dataset", "group", "duo", "blue", "9")
    assert code == 1 and "no image #9" in data["error"]["message"]
    code, data = cli("dataset", "group", "duo", "blue", "--remove")
    assert code == 0 and data["removed"]["image_count"] == 2
    assert parse_element("Duo:0.8@outfit-red") == ("Duo@outfit-red", 0.8)
    assert parse_element("Duo@outfit-red:0.5") == ("Duo@outfit-red", 0.5)
    assert parse_element("Duo@outfit-red") == ("Duo@outfit-red", None)
