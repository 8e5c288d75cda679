import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch
from torch import nn

import course_utils.data as data


def write_idx(path, array: np.ndarray, compress: bool = True) -> str:
    """Write ``array`` (uint8) as an IDX file; return the SHA-256 of the uncompressed bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape) + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """A fake Fashion-MNIST folder (6 train, 4 test images) with matching checksums, found via $COURSE_DATA_DIR."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    sums, arrays = {}, {}
    for split, n in (("train", 6), ("test", 4)):
        img_name, lbl_name = data.FASHION_FILES[split]
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, n, dtype=np.uint8)
        sums[img_name] = write_idx(folder / img_name, imgs)
        sums[lbl_name] = write_idx(folder / lbl_name, lbls)
        arrays[split] = (imgs, lbls)
    monkeypatch.setattr(data, "FASHION_SHA256", sums)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    return folder, arrays


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models: a second thread costs more than it saves. Use with ``pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_classification(seed=0, n=96):
    """``n`` 1×6×6 images with 4 classes readable from their pixels (the training tests' and recipes' problem)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return x, y


def toy_classifier():
    """A seeded conv net with dropout for :func:`toy_classification` (1×6×6 in, 4 logits out)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(64, 4))


def no_hooks(model) -> bool:
    """True when no forward (pre-)hook is left on any submodule of ``model``."""
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def toy_segmentation(n=24, size=8):
    """Bright squares (class 1) on a dark background (class 0): a pixel's class is readable from its value."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, size - 3, (2,), generator=g).tolist()
        masks[i, r:r + 3, c:c + 3] = 1
    images = masks[:, None].float() * 0.8 + 0.1 * torch.rand(n, 1, size, size, generator=g)
    return images, masks
