"""Atomic writes: a file is either absent or complete. Content round-trips; a writer that fails half-way leaves
no file and no temp file behind, and does not destroy the file that was there before."""

import pickle
from pathlib import Path

import pytest
import torch

from course_utils.io import atomic_torch_save, atomic_write, atomic_write_text


class Boom(Exception):
    """A writer dying half-way."""


def _half_written(tmp):
    Path(tmp).write_text("half of the ")
    raise Boom


def test_text_round_trips_creates_folders_and_overwrites(tmp_path):
    path = tmp_path / "new" / "folder" / "notes.txt"
    text = "ünïcode — ✓\nsecond line\n"
    assert atomic_write_text(path, text) == path
    assert path.read_text(encoding="utf-8") == text
    assert atomic_write_text(str(path), "replaced") == path  # str paths too; the old content is replaced whole
    assert path.read_text(encoding="utf-8") == "replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["notes.txt"]  # no temp file left behind


def test_torch_save_round_trips(tmp_path):
    state = {"weight": torch.randn(3, 4), "step": 7, "nested": {"ids": torch.arange(5)}}
    path = atomic_torch_save(state, tmp_path / "ckpt.pt")
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == state.keys() and loaded["step"] == 7
    assert torch.equal(loaded["weight"], state["weight"]) and torch.equal(loaded["nested"]["ids"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_the_destination_is_untouched_until_the_write_is_complete(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    seen = {}

    def write(tmp):
        seen["tmp"] = Path(tmp)
        Path(tmp).write_text("new content")
        seen["during"] = path.read_text()  # the reader still sees the complete old file

    atomic_write(path, write)
    assert seen["tmp"].parent == path.parent and seen["tmp"] != path  # same folder: the rename is atomic
    assert seen["during"] == "old" and path.read_text() == "new content"
    assert not seen["tmp"].exists() and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_writer_that_fails_half_way_leaves_no_file_and_no_temp_file(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(Boom):
        atomic_write(path, _half_written)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_failed_write_keeps_the_existing_file(tmp_path, error):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "complete")

    def write(tmp):
        Path(tmp).write_text("half")
        raise error

    with pytest.raises(error):  # an interrupt (a BaseException) cleans up too
        atomic_write(path, write)
    assert path.read_text() == "complete" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_torch_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_torch_save({"epoch": 2, "fn": lambda: None}, path)  # a lambda cannot be pickled
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
