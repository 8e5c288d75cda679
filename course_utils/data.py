"""Data sets, found offline first and verified: Fashion-MNIST, handwritten digits, and seeded splits.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) is the course's workhorse: 60,000 training and 10,000
test images of 28x28 grey-scale clothing in 10 classes. ``load_fashion_mnist`` reads the original
IDX ``.gz`` files with a small parser, looking in this order:

1. ``$COURSE_DATA_DIR`` (the files directly in it, or in ``$COURSE_DATA_DIR/fashion-mnist``),
2. ``data/fashion-mnist/`` in the course repository (``./data/fashion-mnist/`` when the package is installed),
3. ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``),
4. a download through torchvision's mirrors into that ``data/fashion-mnist/`` (where there is internet).

Each file is checked against the SHA-256 of its *decompressed* content, so re-compressed copies
(Debian's, for one) are accepted and damaged ones are not. ``python -m course_utils.data`` finds (or
downloads) and verifies the files. ``load_digits28`` gives real handwritten digits at MNIST's size, and
``stratified_subset`` / ``train_val_split`` draw seeded index sets.

The loaders are in ``course_utils.loader``; the data sets derived from these images (transformation pairs,
segmentation canvases, fashion + digits) in ``course_utils.datasets``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["FASHION_CLASSES", "FASHION_MEAN", "FASHION_STD", "FASHION_FILES", "FASHION_SHA256", "DEFAULT_DATA_DIR",
           "DatasetNotFoundError", "DatasetCorruptError", "fashion_mnist_dirs", "find_fashion_mnist_dir", "describe_fashion_mnist_source",
           "read_idx", "load_fashion_mnist", "load_digits28", "class_subset", "normalize", "stratified_subset", "train_val_split"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# In a checkout of the course: its data/ folder. Installed as a package (e.g. on Colab): ./data.
DEFAULT_DATA_DIR = REPO_ROOT / "data" if (REPO_ROOT / "pyproject.toml").is_file() else Path("data")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # pixel mean and std of the training images, in [0, 1]

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# SHA-256 of the decompressed IDX files (the .gz bytes differ between copies; the content does not).
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

HOW_TO_GET = (
    "Get Fashion-MNIST in one of these ways:\n"
    "  * Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (files land in /usr/share/datasets/fashion-mnist/)\n"
    "  * with internet: `make data`, or call load_fashion_mnist(download=True) (torchvision's mirrors)\n"
    "  * by hand: put the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist\n"
    "    into data/fashion-mnist/ or into the folder named by $COURSE_DATA_DIR."
)


class DatasetNotFoundError(FileNotFoundError):
    """The data set is in none of the places searched and could not be downloaded."""


class DatasetCorruptError(ValueError):
    """A data file exists but its content is not what it should be."""


def fashion_mnist_dirs() -> list[Path]:
    """The folders searched for the Fashion-MNIST files, in order."""
    dirs = []
    env = os.environ.get("COURSE_DATA_DIR")
    if env:
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    dirs += [DEFAULT_DATA_DIR / "fashion-mnist", DEBIAN_DIR]
    return dirs


def find_fashion_mnist_dir(split: str = "train") -> Path | None:
    """The first searched folder that holds both files of ``split``, or None."""
    for d in fashion_mnist_dirs():
        if all((d / name).is_file() for name in FASHION_FILES[split]):
            return d
    return None


def describe_fashion_mnist_source() -> str:
    """Where Fashion-MNIST would be read from, without reading it (for the provenance line)."""
    d = find_fashion_mnist_dir("train")
    return f"Fashion-MNIST from {d}" if d else "Fashion-MNIST not found yet (will try to download)"


def read_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a NumPy array, verifying its content's SHA-256.

    The format (LeCun et al.): two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    then each dimension as a big-endian int32, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises these on truncated or damaged files
        raise DatasetCorruptError(f"{path} cannot be read ({e}). Delete it and get it again.\n{HOW_TO_GET}") from e
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise DatasetCorruptError(
                f"Checksum mismatch for {path}: SHA-256 of its content is {actual}, expected {expected_sha256}. "
                f"The file is damaged or not the original; delete it and get it again.\n{HOW_TO_GET}"
            )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetCorruptError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    shape = tuple(int(np.frombuffer(raw, ">i4", count=1, offset=4 + 4 * i)[0]) for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise DatasetCorruptError(f"{path}: header says shape {shape} but the file holds {len(raw) - offset} bytes.")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _download_fashion_mnist(dest: Path) -> None:
    """Download the four files with torchvision into a temp folder, verify, then move into ``dest``."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        for names in FASHION_FILES.values():
            for name in names:
                if (dest / name).is_file():
                    continue
                errors = []
                for mirror in FashionMNIST.mirrors:
                    try:
                        download_url(mirror + name, root=str(tmp), filename=name)
                        break
                    except Exception as e:  # try the next mirror, keep the reason
                        errors.append(f"{mirror}: {e}")
                else:
                    raise DatasetNotFoundError(f"Could not download {name}: {'; '.join(errors)}\n{HOW_TO_GET}")
                read_idx(tmp / name, FASHION_SHA256[name])  # verify before it enters the data folder
                os.replace(tmp / name, dest / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_fashion_mnist(split: str = "train", download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load Fashion-MNIST as uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        download: when the files are nowhere on disk, download them into ``data/fashion-mnist/``.
    """
    if split not in FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist_dir(split)
    if folder is None:
        searched = "\n".join(f"  - {d}" for d in fashion_mnist_dirs())
        if not download:
            raise DatasetNotFoundError(f"Fashion-MNIST ({split}) not found. Searched:\n{searched}\n{HOW_TO_GET}")
        try:
            _download_fashion_mnist(DEFAULT_DATA_DIR / "fashion-mnist")
        except DatasetNotFoundError:
            raise
        except Exception as e:
            raise DatasetNotFoundError(
                f"Fashion-MNIST ({split}) not found and the download failed ({e}). Searched:\n{searched}\n{HOW_TO_GET}"
            ) from e
        folder = DEFAULT_DATA_DIR / "fashion-mnist"
    image_file, label_file = FASHION_FILES[split]
    images = read_idx(folder / image_file, FASHION_SHA256[image_file])
    labels = read_idx(folder / label_file, FASHION_SHA256[label_file])
    if images.shape[0] != labels.shape[0]:
        raise DatasetCorruptError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels.")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_digits28(source: str = "auto", verbose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits as uint8 ``(N, 1, 28, 28)`` images and int64 labels.

    Sources:
        ``"sklearn"``: scikit-learn's bundled UCI handwritten digits (1,797 real 8x8 images, grey
        levels 0-16), each upscaled bilinearly to 20x20 and centred in a 28x28 frame as MNIST is.
        ``"mnist"``: MNIST's 60,000 training digits through torchvision (downloaded into ``data/``).
        ``"auto"``: MNIST if its files are already in ``data/``, otherwise scikit-learn's digits.
    """
    if source not in ("auto", "sklearn", "mnist"):
        raise ValueError(f"source must be 'auto', 'sklearn' or 'mnist', got {source!r}")
    mnist_raw = DEFAULT_DATA_DIR / "MNIST" / "raw"
    if source == "mnist" or (source == "auto" and (mnist_raw / "train-images-idx3-ubyte").exists()):
        from torchvision.datasets import MNIST

        ds = MNIST(str(DEFAULT_DATA_DIR), train=True, download=source == "mnist")
        images, labels = ds.data.unsqueeze(1).clone(), ds.targets.long().clone()
        what = f"MNIST via torchvision ({len(labels)} images)"
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        small = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        big = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
        big = torch.nn.functional.pad(big, (4, 4, 4, 4))  # MNIST digits sit in a 20x20 box in 28x28
        images = (big.clamp(0, 1) * 255).round().to(torch.uint8)
        labels = torch.from_numpy(d.target.astype(np.int64))
        what = f"scikit-learn 8x8 digits upscaled to 28x28 ({len(labels)} images)"
    if verbose:
        print(f"digits: {what}")
    return images, labels


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class, drawn without replacement (seeded), sorted."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        if per_class > len(idx):
            raise ValueError(f"class {int(c)} has {len(idx)} examples, fewer than per_class={per_class}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images scaled to [0, 1] (float images as they are), then ``(x - mean) / std``: the input a model
    trained with ``TensorLoader(..., mean=mean, std=std)`` sees, e.g. ``normalize(x, FASHION_MEAN, FASHION_STD)``."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return (x - mean) / std


def class_subset(images: torch.Tensor, labels: torch.Tensor, classes, per_class: int,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in the order given, with
    ``per_class`` of each drawn by ``stratified_subset(new_labels, per_class, seed)``.

    E.g. ``class_subset(x, y, (0, 6), 1000)``: 1000 T-shirts labelled 0 and 1000 shirts labelled 1;
    returns ``(images[idx], new_labels[idx])`` with ``idx`` sorted, so the original order is kept.
    """
    classes = torch.as_tensor(list(classes), dtype=torch.long)
    if len(classes.unique()) != len(classes):
        raise ValueError(f"classes must be distinct, got {classes.tolist()}")
    labels = torch.as_tensor(labels)
    remap = torch.full((int(max(labels.max(), classes.max())) + 1,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    keep = torch.isin(labels, classes)
    new_labels = remap[labels[keep]]
    idx = stratified_subset(new_labels, per_class, seed=seed)
    return images[keep][idx], new_labels[idx]


def train_val_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint index sets ``(train_idx, val_idx)`` over ``range(n)`` (seeded)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def main() -> None:
    """``python -m course_utils.data``: find (or download) and verify Fashion-MNIST, and say where it is."""
    for split in FASHION_FILES:
        images, labels = load_fashion_mnist(split)
        print(f"Fashion-MNIST {split}: {tuple(images.shape)} images, {len(labels)} labels, checksums OK")
    print(describe_fashion_mnist_source())


if __name__ == "__main__":
    main()
