import shutil

import numpy as np
import pytest
import torch

import course_utils.data as data
from course_utils.data import DatasetCorruptError, DatasetNotFoundError, load_fashion_mnist, read_idx
from tests.conftest import write_idx


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    sha = write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", sha), arr)
    write_idx(tmp_path / "b", arr, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), arr)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetCorruptError, match="magic"):
        read_idx(tmp_path / "x")
    write_idx(tmp_path / "y", np.zeros((5, 2), np.uint8), compress=False)
    (tmp_path / "y").write_bytes((tmp_path / "y").read_bytes()[:-3])
    with pytest.raises(DatasetCorruptError, match="header says shape"):
        read_idx(tmp_path / "y")


def test_load_from_course_data_dir(tiny_fashion):
    folder, arrays = tiny_fashion
    x, y = load_fashion_mnist("train", download=False)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    np.testing.assert_array_equal(x[:, 0].numpy(), arrays["train"][0])
    np.testing.assert_array_equal(y.numpy(), arrays["train"][1])
    assert str(folder) in data.describe_fashion_mnist_source()


def test_checksum_mismatch_names_the_fix(tiny_fashion, monkeypatch):
    folder, _ = tiny_fashion
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))  # content changed, checksum not
    with pytest.raises(DatasetCorruptError) as e:
        load_fashion_mnist("test", download=False)
    msg = str(e.value)
    assert "Checksum mismatch" in msg and "t10k-labels" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_missing_data_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "fashion_mnist_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist("train", download=False)
    msg = str(e.value)
    assert "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg and "make data" in msg


def test_download_verifies_and_leaves_no_partial_files(tmp_path, monkeypatch):
    """The real download code, fed by a fake mirror that serves files this test writes."""
    import torchvision.datasets.utils as tvu

    src = tmp_path / "mirror"
    src.mkdir()
    sums = {}
    for split, n in (("train", 3), ("test", 2)):
        img, lbl = data.FASHION_FILES[split]
        sums[img] = write_idx(src / img, np.full((n, 28, 28), 7, np.uint8))
        sums[lbl] = write_idx(src / lbl, np.arange(n, dtype=np.uint8))
    monkeypatch.setattr(data, "FASHION_SHA256", sums)
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(data, "fashion_mnist_dirs", lambda: [tmp_path / "data" / "fashion-mnist"])

    def fake_download(url, root, filename):
        shutil.copy(src / filename, f"{root}/{filename}")

    monkeypatch.setattr(tvu, "download_url", fake_download)
    x, y = load_fashion_mnist("test")
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [0, 1]
    dest = tmp_path / "data" / "fashion-mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["fashion-mnist"]  # temp folder removed

    # a corrupt download is rejected and never enters the data folder
    for p in dest.iterdir():
        p.unlink()
    def bad_download(url, root, filename):
        (tmp_path / "bad").write_bytes(b"not gzip")
        shutil.copy(tmp_path / "bad", f"{root}/{filename}")
    monkeypatch.setattr(tvu, "download_url", bad_download)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_fashion_mnist("test")
    assert list(dest.iterdir()) == []


def test_real_fashion_mnist_is_available_and_verified():
    """`make data` must have made the real data set available (Debian package or download)."""
    x, y = load_fashion_mnist("test", download=False)
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
    assert y[:5].tolist() == [9, 2, 1, 1, 6]


def test_digits28_from_sklearn():
    x, y = data.load_digits28(source="sklearn", verbose=False)
    assert x.shape == (1797, 1, 28, 28) and x.dtype == torch.uint8
    assert set(y.unique().tolist()) == set(range(10))
    assert x[:, :, :4].max() == 0 and x[:, :, 24:].max() == 0  # the digit sits in the central 20x20 box
    assert x.float().mean() > 10


def test_stratified_subset_and_split():
    y = torch.arange(100) % 5
    idx = data.stratified_subset(y, 3, seed=1)
    assert torch.bincount(y[idx]).tolist() == [3] * 5
    assert torch.equal(idx, data.stratified_subset(y, 3, seed=1))
    with pytest.raises(ValueError, match="fewer than per_class"):
        data.stratified_subset(y, 21)
    tr, va = data.train_val_split(100, 0.2, seed=0)
    assert len(va) == 20 and len(tr) == 80 and not set(tr.tolist()) & set(va.tolist())


def test_every_data_name_has_one_home():
    """No re-exports and no module ``__getattr__``: the loaders and derived data sets live in their own modules."""
    import importlib.util

    from course_utils import augment, loader
    from course_utils.datasets import canvas, pairs, spurious

    assert not hasattr(data, "__getattr__") and not hasattr(data, "TensorLoader")
    with pytest.raises(AttributeError, match="no attribute 'FashionCanvas'"):
        data.FashionCanvas  # noqa: B018
    for old in ("canvas", "composite", "distort", "mixup"):
        assert importlib.util.find_spec(f"course_utils.{old}") is None
    modules = (data, loader, augment, pairs, canvas, spurious)
    homes = {}
    for m in modules:
        for name in m.__all__:
            assert hasattr(m, name), f"{m.__name__}.__all__ names {name}, which it does not define"
            homes.setdefault(name, []).append(m.__name__)
    assert {n: h for n, h in homes.items() if len(h) > 1} == {}


def test_class_subset_relabels_in_the_given_order_and_draws_per_class():
    y = torch.arange(60) % 5  # 12 examples of each of 5 classes
    x = torch.arange(60)[:, None] * 10
    xs, ys = data.class_subset(x, y, (3, 1), 4, seed=2)
    assert torch.bincount(ys).tolist() == [4, 4]
    assert torch.equal(y[xs[:, 0] // 10], torch.tensor([3, 1])[ys])  # label 0 is class 3, label 1 is class 1
    keep = (y == 3) | (y == 1)
    idx = data.stratified_subset(torch.where(y[keep] == 3, 0, 1), 4, seed=2)
    assert torch.equal(xs, x[keep][idx])  # the same draw as stratified_subset of the relabelled examples
    with pytest.raises(ValueError, match="distinct"):
        data.class_subset(x, y, (1, 1), 4)


def test_normalize_matches_what_the_loader_feeds_a_model():
    from course_utils.loader import TensorLoader

    x = torch.randint(0, 256, (7, 1, 5, 5), dtype=torch.uint8)
    out = data.normalize(x, data.FASHION_MEAN, data.FASHION_STD)
    batch, _ = next(iter(TensorLoader(x, torch.zeros(7), 7, mean=data.FASHION_MEAN, std=data.FASHION_STD)))
    assert out.dtype == torch.float32 and torch.equal(out, batch)
    assert torch.equal(data.normalize(x.float() / 255, 0.5, 2.0), (x.float() / 255 - 0.5) / 2.0)  # floats not rescaled
