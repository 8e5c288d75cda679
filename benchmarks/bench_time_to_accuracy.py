"""Time-to-accuracy: the reference ResNet on the full Fashion-MNIST training set, 2 CPU cores.

Trains with ``course_utils.train.fit`` (SGD + Nesterov, one-cycle schedule, label smoothing 0.1, random
crop + flip, channels-last) and evaluates on the test set after every epoch, so the time at which the
seed's 92.4% is first reached can be read off. Wall-clock minutes include those evaluations. The final
accuracy is also given with test-time flip augmentation.

Usage: python -m benchmarks.bench_time_to_accuracy [--epochs 8] [--widths 16 32 64] [--n 2] ...
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import course_utils
from course_utils.data import FASHION_MEAN, FASHION_STD, load_fashion_mnist
from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip
from course_utils.loader import TensorLoader
from course_utils.metrics import accuracy
from course_utils.models.resnet import resnet6n2
from course_utils.optim import sgd_one_cycle
from course_utils.train import evaluate, fit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--widths", type=int, nargs=3, default=(16, 32, 64))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--target", type=float, default=0.924)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    course_utils.setup(args.seed)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    norm = dict(mean=FASHION_MEAN, std=FASHION_STD, channels_last=True)
    train = TensorLoader(x, y, args.batch_size, shuffle=True, augment=Compose([RandomCrop(2), RandomHorizontalFlip()]),
                         drop_last=True, seed=args.seed, **norm)
    test = TensorLoader(xt, yt, 1000, **norm)
    model = resnet6n2(args.n, 10, norm="torch_bn", widths=args.widths).to(memory_format=torch.channels_last)
    optimizer, scheduler = sgd_one_cycle(model, args.lr, args.epochs * len(train))
    t0 = time.perf_counter()
    history = fit(model, train, test, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
                  loss_fn=lambda logits, t: F.cross_entropy(logits, t, label_smoothing=args.label_smoothing),
                  progress=False)
    wall = time.perf_counter() - t0
    eval_overhead = (wall - sum(history["seconds"])) / len(history)  # per epoch, spread evenly
    elapsed = torch.tensor(history["seconds"]).add(eval_overhead).cumsum(0) / 60
    reached = next((float(m) for m, a in zip(elapsed, history["val_acc"]) if a >= args.target), None)
    ev = evaluate(model, test, tta_flip=True)
    acc_tta = accuracy(ev.preds, ev.targets)
    minutes = (time.perf_counter() - t0) / 60
    print(f"RESULT test_acc={history['val_acc'][-1]:.4f} test_acc_flip_tta={acc_tta:.4f} minutes={minutes:.2f} "
          f"time_to_{args.target}={'not reached' if reached is None else f'{reached:.2f} min'} "
          f"epochs={args.epochs} n={args.n} widths={tuple(args.widths)} batch={args.batch_size} lr={args.lr}")
    return acc_tta, minutes, reached


if __name__ == "__main__":
    main()
