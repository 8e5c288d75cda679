"""Throughput of ``course_utils.train.fit`` against a hand-written PyTorch loop (goal: ratio >= 0.95).

Both train the reference ResNet on the same 10,240 Fashion-MNIST images with the same loader,
optimiser and schedule; the runs alternate and each side keeps its best of three.
"""

import torch
import torch.nn.functional as F

from benchmarks.common import MEAN, STD, best_of, report, setup
from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip
from course_utils.loader import TensorLoader
from course_utils.models.resnet import reference_resnet
from course_utils.train import fit


def main():
    x, y = setup()
    x, y = x[:10_240], y[:10_240]
    loader = TensorLoader(x, y, 128, shuffle=True, augment=Compose([RandomCrop(2), RandomHorizontalFlip()]),
                          drop_last=True, mean=MEAN, std=STD, channels_last=True)

    def make():
        torch.manual_seed(0)
        model = reference_resnet().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=len(loader))
        return model, opt, sched

    def raw_loop():
        model, opt, sched = make()
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    def with_fit():
        model, opt, sched = make()
        fit(model, loader, None, epochs=1, optimizer=opt, scheduler=sched, progress=False, verbose=False)

    raw_loop()  # warm-up
    t_raw, t_fit = float("inf"), float("inf")
    for _ in range(3):
        t_raw = min(t_raw, best_of(raw_loop, 1))
        t_fit = min(t_fit, best_of(with_fit, 1))
    n = len(loader) * 128
    print(f"raw loop {n / t_raw:.0f} img/s, fit {n / t_fit:.0f} img/s")
    report("fit_vs_raw_throughput_ratio", t_raw / t_fit, ">= 0.95")


if __name__ == "__main__":
    main()
