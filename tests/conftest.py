import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

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
