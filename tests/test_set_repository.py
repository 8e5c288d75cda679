"""scripts/set_repository.py: a fork points the book and every install cell at its own address in one step."""

import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from set_repository import set_repository  # noqa: E402


@pytest.fixture
def copy(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path)
    (tmp_path / "chapters").mkdir()
    for name in ("00_quickstart.py", "00_quickstart.ipynb", "03_deformable_convolution.ipynb"):
        shutil.copy(ROOT / "chapters" / name, tmp_path / "chapters")
    return tmp_path


def test_a_new_address_reaches_the_config_and_every_install_cell(copy):
    before = nbformat.read(copy / "chapters/03_deformable_convolution.ipynb", as_version=4)
    changed = set_repository("https://github.com/someone/dl4cv-fork.git/", copy)
    assert {p.name for p in changed} == {"_config.yml", "00_quickstart.py", "00_quickstart.ipynb",
                                         "03_deformable_convolution.ipynb"}
    assert re.search(r"^\s*url: https://github.com/someone/dl4cv-fork\s", (copy / "_config.yml").read_text(), re.M)
    assert 'REPO = "https://github.com/someone/dl4cv-fork"' in (copy / "chapters/00_quickstart.py").read_text()
    after = nbformat.read(copy / "chapters/03_deformable_convolution.ipynb", as_version=4)
    assert 'REPO = "https://github.com/someone/dl4cv-fork"' in after.cells[1].source + after.cells[2].source
    assert [c.get("outputs") for c in after.cells] == [c.get("outputs") for c in before.cells]  # outputs untouched
    assert set_repository("https://github.com/someone/dl4cv-fork", copy) == []  # idempotent


def test_a_bad_address_is_refused_and_nothing_is_written(copy):
    config = (copy / "_config.yml").read_text()
    with pytest.raises(ValueError, match="https://github.com/<owner>/<name>"):
        set_repository("git@github.com:someone/dl4cv", copy)
    assert (copy / "_config.yml").read_text() == config
