"""The chapter notebooks as files: paired with their text twins, executed, lean, with checked cells."""

import json
import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
CHECK = "# NBVAL_CHECK_OUTPUT"


def _code(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_text_twin_is_in_sync(path):
    twin = path.with_suffix(".py")
    assert twin.exists(), f"{twin.name} is missing: run `make sync`"
    ipynb, py = jupytext.read(path), jupytext.read(twin)
    a = [(c.cell_type, c.source.strip()) for c in ipynb.cells]
    b = [(c.cell_type, c.source.strip()) for c in py.cells]
    assert a == b, f"{path.name} and {twin.name} differ: re-execute with `make execute` or run `make sync`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_without_errors_lean_and_checked(path):
    nb = json.loads(path.read_text())
    code = _code(nb)
    assert all(c.get("execution_count") for c in code), "every code cell must have been executed"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"error outputs in {path.name}"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "cells were executed out of order"
    checked = [c for c in code if _src(c).lstrip().startswith(CHECK)]
    assert len(checked) >= 3, f"{path.name} has {len(checked)} checked cells; every chapter needs at least 3"
    assert all(c.get("outputs") for c in checked), "a checked cell without output checks nothing"
    assert path.stat().st_size < 5e6, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB; keep notebooks < 5 MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_provenance_and_profile_cell(path):
    nb = json.loads(path.read_text())
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in _code(nb) for o in c.get("outputs", []) if o["output_type"] == "stream")
    assert re.search(r"profile=(cpu|gpu) \| device=", text), "the committed outputs must come from a cpu or gpu run"
    sources = "\n".join(_src(c) for c in _code(nb))
    assert "course_utils.setup(" in sources and "by_profile(" in sources


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_uses_the_repository_of_the_book(path):
    config = (ROOT / "_config.yml").read_text()
    url = re.search(r"^\s*url:\s*(\S+)", config, re.M).group(1)
    first = _src(_code(json.loads(path.read_text()))[0])
    assert f'REPO = "{url}"' in first, "the setup cell must install from the repository named in _config.yml"


def test_checksums_are_written_the_same_everywhere():
    from course_utils.data import FASHION_SHA256

    listed = dict(reversed(line.split()) for line in (ROOT / "data/checksums.sha256").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert listed == FASHION_SHA256
    page = (ROOT / "book/datasets.md").read_text()
    assert all(f"`{name}` | `{sha}`" in page.replace("  |", " |") for name, sha in FASHION_SHA256.items())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_stops_with_a_message_when_pip_fails(path, monkeypatch):
    """On Colab the first cell installs course_utils; if pip fails, the reader gets what to do, not a traceback."""
    import importlib.util
    import subprocess

    first = _src(_code(json.loads(path.read_text()))[0])
    first = first.split("\nimport torch", 1)[0]  # the install part; the rest needs torch only
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # as on a fresh Colab runtime
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, "", "Collecting course_utils\nERROR: Repository not found."))
    with pytest.raises(SystemExit) as stop:
        exec(compile(first, path.name, "exec"), {})
    message = str(stop.value)
    assert "Could not install course_utils from https://" in message and "ERROR: Repository not found." in message
    assert "Setup page" in message and "pip install -e" in message


def test_every_configuration_cell_prints_its_budget():
    from course_utils.budget import load_budgets

    budgets = load_budgets()
    for path in NOTEBOOKS:
        ch = path.name[:2]
        cfg = next(_src(c) for c in _code(json.loads(path.read_text())) if "by_profile(" in _src(c))
        assert f'print(estimate_line("{ch}"))' in cfg, f"{path.name}: the configuration cell must print its budget"
        assert {"smoke", "cpu", "gpu"} <= set(budgets.get(ch, {}).get("flops", {})), (
            f"course_utils/budgets.json lacks chapter {ch}: python scripts/dry_run.py {ch} --profile <p> --update")
