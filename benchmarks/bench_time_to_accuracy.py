"""Time-to-accuracy: the reference ResNet on the full Fashion-MNIST training set, 2 CPU cores.

Trains with ``course_utils.train.fit`` under a wall-clock budget and prints the test accuracy reached
and the minutes it took to first reach the seed's 92.4%. Every epoch is evaluated on the test set
with test-time flip, to find the time to 92.4% (evaluation time is counted in the budget).

Usage: python benchmarks/bench_time_to_accuracy.py [--epochs 8] [--widths 16 32 64] [--n 2] ...
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

import course_utils
from course_utils.data import load_fashion_mnist
from course_utils.loader import Compose, RandomCrop, RandomHorizontalFlip, TensorLoader
from course_utils.metrics import accuracy
from course_utils.models import resnet6n2
from course_utils.train import evaluate

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean and std


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--widths", type=int, nargs=3, default=(16, 32, 64))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0 = off)")
    p.add_argument("--budget-min", type=float, default=10.0)
    p.add_argument("--target", type=float, default=0.924)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    course_utils.setup(args.seed)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    aug = Compose([RandomCrop(2), RandomHorizontalFlip()])
    train = TensorLoader(x, y, args.batch_size, shuffle=True, augment=aug, drop_last=True, seed=args.seed,
                         mean=MEAN, std=STD, channels_last=True)
    test = TensorLoader(xt, yt, 1000, mean=MEAN, std=STD, channels_last=True)
    model = resnet6n2(args.n, 10, norm="torch_bn", widths=args.widths).to(memory_format=torch.channels_last)
    decay = [p for n_, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(train),
                                                pct_start=0.25, anneal_strategy="linear")
    ema = copy.deepcopy(model) if args.ema else None
    t0 = time.perf_counter()
    reached = None
    for epoch in range(1, args.epochs + 1):
        model.train()
        train.set_epoch(epoch - 1)
        for xb, yb in train:
            loss = F.cross_entropy(model(xb), yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm, 1 - args.ema)
                    for be, bm in zip(ema.buffers(), model.buffers()):
                        be.copy_(bm)
        final = ema if ema is not None else model
        ev = evaluate(final, test, tta_flip=True)
        acc = accuracy(ev.preds, ev.targets)
        minutes = (time.perf_counter() - t0) / 60
        if reached is None and acc >= args.target:
            reached = minutes
        print(f"epoch {epoch}: test acc {acc:.4f} (flip TTA) at {minutes:.2f} min", flush=True)
        if minutes > args.budget_min:
            print(f"budget of {args.budget_min} min exceeded")
            break
    print(f"RESULT test_acc={acc:.4f} minutes={minutes:.2f} time_to_{args.target}="
          f"{'not reached' if reached is None else f'{reached:.2f} min'} args={vars(args)}")
    return acc, minutes, reached


if __name__ == "__main__":
    main()
