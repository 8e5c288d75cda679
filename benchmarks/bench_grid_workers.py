"""Small networks side by side or one after the other: ``run_grid(workers=2)`` vs ``workers=1``.

Chapters 2, 6 and 7 train grids of small networks on a CPU with ``experiments.run_grid(workers=2)``: two
forked processes with one PyTorch thread each, instead of one process using every thread. This
benchmark trains the same grid (VGG-ResNet(2, 32, maxpool) of chapter 2, one pass over
``--images`` Fashion-MNIST images, batch 32) both ways and prints the wall-time ratio. Both ways use
the same total number of threads (``os.cpu_count()``, 2 here). There are no thresholds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from benchmarks.common import MEAN, STD, report, setup
from course_utils.experiments import run_grid
from course_utils.loader import TensorLoader
from course_utils.models.vgg import VGGResNet
from course_utils.optim import sgd_one_cycle
from course_utils.runtime import seed_everything
from course_utils.train import fit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4000, help="training images per run")
    p.add_argument("--runs", type=int, default=4, help="runs in the grid (configs x seeds)")
    args = p.parse_args(argv)
    x, y = setup()
    x, y = x[:args.images], y[:args.images]
    threads = os.cpu_count() or 1

    def train(config, seed):
        seed_everything(seed)
        model = VGGResNet(2, 32, "maxpool", norm="torch_bn").to(memory_format=torch.channels_last)
        loader = TensorLoader(x, y, 32, shuffle=True, drop_last=True, seed=seed, channels_last=True, mean=MEAN, std=STD)
        opt, sched = sgd_one_cycle(model, 0.2, len(loader))
        h = fit(model, loader, None, epochs=1, optimizer=opt, scheduler=sched, progress=False, verbose=False,
                loss_fn=lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1))
        return {"train_acc": h.last["train_acc"]}

    configs = {f"run {i}": {"i": i} for i in range(args.runs)}
    times = {}
    for workers in (1, 2):
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            run_grid(configs, [0], train, cache_dir=cache, verbose=False, workers=workers)
            times[workers] = time.perf_counter() - t0
        print(f"workers={workers}: {times[workers]:.1f} s for {args.runs} runs of {args.images} images "
              f"({args.runs * args.images / times[workers]:.0f} images/s)", flush=True)
    torch.set_num_threads(threads)
    report("grid wall time, 1 process x %d threads / 2 processes x 1 thread" % threads, times[1] / times[2],
           "> 1: side by side is faster")


if __name__ == "__main__":
    main()
