"""``TensorLoader`` with batched augmentation vs ``torch.utils.data.DataLoader`` over torchvision's
``FashionMNIST`` with the same per-image transforms (random crop with padding 2, horizontal flip,
normalisation). Goals: images/s ratio >= 20; batch production <= 2% of a training step.
"""

import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from benchmarks.common import MEAN, STD, best_of, report, setup
from course_utils.data import FASHION_FILES, find_fashion_mnist_dir
from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip
from course_utils.loader import TensorLoader
from course_utils.models.resnet import reference_resnet


def torchvision_dataset(root: Path) -> datasets.FashionMNIST:
    """torchvision's FashionMNIST over the same verified files, decompressed where it expects them."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = find_fashion_mnist_dir("train")
    for name in FASHION_FILES["train"] + FASHION_FILES["test"]:  # torchvision checks that all four exist
        with gzip.open(src / name) as f, open(raw / name[:-3], "wb") as out:
            shutil.copyfileobj(f, out)
    tf = transforms.Compose([transforms.RandomCrop(28, padding=2), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    return datasets.FashionMNIST(str(root), train=True, transform=tf, download=False)


def images_per_s(loader, max_batches: int) -> float:
    t0, n = time.perf_counter(), 0
    for i, (xb, _) in enumerate(loader):
        n += len(xb)
        if i + 1 == max_batches:
            break
    return n / (time.perf_counter() - t0)


def main():
    x, y = setup()
    aug = Compose([RandomCrop(2), RandomHorizontalFlip()])
    ours = TensorLoader(x, y, 128, shuffle=True, augment=aug, drop_last=True, mean=MEAN, std=STD, channels_last=True)
    ours_rate = max(images_per_s(ours, 200) for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        ds = torchvision_dataset(Path(tmp))
        results = {}
        for workers in (0, 2):
            dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=workers, drop_last=True)
            results[workers] = max(images_per_s(dl, 60) for _ in range(2))
    for workers, rate in results.items():
        print(f"DataLoader (num_workers={workers}): {rate:.0f} img/s")
    print(f"TensorLoader: {ours_rate:.0f} img/s")
    report("tensorloader_vs_dataloader_ratio", ours_rate / max(results.values()), ">= 20 (vs the faster DataLoader)")

    model = reference_resnet().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = list(zip(range(30), ours))

    def steps():
        for _, (xb, yb) in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    steps()
    t_step = best_of(steps, 2) / len(batches)
    t_batch = 128 / ours_rate
    report("batch_share_of_training_step", t_batch / (t_batch + t_step), "<= 0.02")


if __name__ == "__main__":
    main()
