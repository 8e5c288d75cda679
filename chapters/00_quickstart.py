# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: the workflow of every chapter
#
# This short chapter trains a small ResNet on Fashion-MNIST and shows the pieces that every later
# chapter uses: the setup cell, the provenance line, the profile configuration, the in-memory data
# loader, the training loop `fit`, training curves, and a confusion matrix.
#
# **Objectives.** After this chapter you can
# - run any chapter of the course on Colab or on your own computer, at the scale of your choice;
# - load Fashion-MNIST with `course_utils.data` and batch it with `TensorLoader`;
# - train and evaluate a model with `course_utils.train.fit` and read its `History`;
# - tell which cells a grader checks, and why they print the same thing on every machine.

# %% [markdown]
# ## Setup
#
# The first cell of every chapter installs the course package when it is missing (on Colab) and
# warns when a Colab runtime has no GPU.

# %%
import importlib.util
import subprocess
import sys

REPO = "https://github.com/course-authors/dl4cv"  # repository.url in _config.yml; a fork sets both (see Setup)
if importlib.util.find_spec("course_utils") is None:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"course_utils @ git+{REPO}@main"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        reason = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise SystemExit(f"Could not install course_utils from {REPO}: {reason}\n"
                         "Check the address (a fork sets its own: see the book's Setup page), or upload the "
                         "course folder and run: pip install -e <folder>")

import torch

if "google.colab" in sys.modules and not torch.cuda.is_available():
    print("No GPU: choose Runtime > Change runtime type > GPU for the full experiment (profile 'gpu').")

# %% [markdown]
# `setup` seeds Python, NumPy and PyTorch, picks the device and the profile, and prints the
# **provenance line**: how this page was produced.

# %%
import matplotlib.pyplot as plt
import torch.nn.functional as F

import course_utils
from course_utils import data, metrics, viz
from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip
from course_utils.budget import estimate_line
from course_utils.loader import TensorLoader
from course_utils.models.resnet import count_weighted_layers, reference_resnet
from course_utils.train import evaluate, fit

viz.book_style()
rt = course_utils.setup(seed=0)

# %% [markdown]
# ## One cell for the scale of the experiment
#
# Each chapter states its three configurations in a single cell. `COURSE_PROFILE=smoke` is for
# graders and CI (a minute on a CPU), `cpu` is what these pages were executed with, `gpu` is the
# full experiment.

# %%
cfg = course_utils.by_profile(
    smoke=dict(train_size=2_000, test_size=1_000, epochs=1, batch_size=128, lr=0.1),
    cpu=dict(train_size=55_000, test_size=10_000, epochs=4, batch_size=128, lr=0.2),
    gpu=dict(train_size=55_000, test_size=10_000, epochs=15, batch_size=128, lr=0.2),
)
print(estimate_line("00"))
cfg

# %% [markdown]
# ## Data
#
# Fashion-MNIST {cite}`xiao2017fashion`: 28x28 grey-scale images of clothing in ten classes. The
# loader reads the original files, verifies their checksums and returns uint8 tensors. We hold out
# 5,000 training images for validation and keep the test set for the end.
#
# The cell below starts with `# NBVAL_CHECK_OUTPUT`: a grader's `nbval` run checks that it prints
# exactly this text, whatever the profile or the machine.

# %%
# NBVAL_CHECK_OUTPUT
x_all, y_all = data.load_fashion_mnist("train")
x_test_all, y_test_all = data.load_fashion_mnist("test")
print("train:", tuple(x_all.shape), x_all.dtype, "| test:", tuple(x_test_all.shape))
print("images per class (train):", torch.bincount(y_all).tolist())
print("classes:", ", ".join(data.FASHION_CLASSES))

# %%
train_idx, val_idx = data.train_val_split(len(y_all), val_fraction=5_000 / 60_000, seed=0)
train_idx = train_idx[: cfg["train_size"]]
x_train, y_train = x_all[train_idx], y_all[train_idx]
x_val, y_val = x_all[val_idx], y_all[val_idx]
x_test, y_test = x_test_all[: cfg["test_size"]], y_test_all[: cfg["test_size"]]
print(f"train {len(y_train)}, val {len(y_val)}, test {len(y_test)}")
viz.show_images(x_train[:16], [data.FASHION_CLASSES[int(c)] for c in y_train[:16]], ncols=8);

# %% [markdown]
# `TensorLoader` keeps the images in one tensor and builds each batch with a single indexing
# operation. Augmentations work on the whole batch at once: here a random crop after padding by 2
# pixels and a random horizontal flip. Pixels are scaled to [0, 1] and normalised with the training
# set's mean and standard deviation.

# %%
# NBVAL_CHECK_OUTPUT
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels
augment = Compose([RandomCrop(padding=2), RandomHorizontalFlip()])
train_loader = TensorLoader(x_train, y_train, cfg["batch_size"], shuffle=True, augment=augment, drop_last=True,
                            seed=0, mean=MEAN, std=STD, channels_last=True)
val_loader = TensorLoader(x_val, y_val, 1_000, mean=MEAN, std=STD, channels_last=True)
test_loader = TensorLoader(x_test, y_test, 1_000, mean=MEAN, std=STD, channels_last=True)
xb, yb = next(iter(TensorLoader(x_all, y_all, 128, augment=augment, mean=MEAN, std=STD)))
print("one batch:", tuple(xb.shape), xb.dtype, "labels", tuple(yb.shape), yb.dtype)
print(f"pixel mean {xb.mean():.2f}, std {xb.std():.2f} after normalisation")

# %% [markdown]
# ## The model
#
# The course's reference model is a ResNet with 6n + 2 = 14 weighted layers {cite}`he2016resnet`
# (n = 2), the subject of Chapter 1. Its parameter count and layer count are checked cells.

# %%
# NBVAL_CHECK_OUTPUT
model = reference_resnet().to(memory_format=torch.channels_last)
n_params = sum(p.numel() for p in model.parameters())
print(f"ResNet-{count_weighted_layers(model)}: {n_params:,} parameters")
print("features:", tuple(model.forward_features(torch.zeros(2, 1, 28, 28)).shape), "-> logits:",
      tuple(model(torch.zeros(2, 1, 28, 28)).shape))

# %% [markdown]
# ## Training
#
# `fit` is a plain loop: for each batch, forward, loss, `zero_grad`, `backward`, `step`, and a
# learning-rate schedule step. We use SGD with Nesterov momentum and weight decay $5 \cdot 10^{-4}$,
# a one-cycle schedule {cite}`smith2019superconvergence` (the rate rises from 1/25 of its peak for a
# quarter of the run, then falls almost to zero; the scheduler also cycles the momentum between 0.95
# and 0.85, overriding the 0.9 given to SGD), and label smoothing of 0.1. Passing `checkpoint=path`
# would save every epoch and resume after a crash.

# %%
optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], pct_start=0.25,
                                                total_steps=cfg["epochs"] * len(train_loader))
history = fit(model, train_loader, val_loader, epochs=cfg["epochs"], optimizer=optimizer, scheduler=scheduler,
              loss_fn=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.1),
              metrics={"acc": metrics.accuracy, "macro_f1": metrics.macro_f1})

# %%
viz.plot_history(history, metrics=("loss", "acc", "macro_f1"));

# %% [markdown]
# ## Evaluation on the test set
#
# The test set is used once, at the end. `evaluate` returns the predictions, the targets, the mean
# loss and the logits; `tta_flip=True` averages each image's logits with those of its mirror image.

# %%
ev = evaluate(model, test_loader, tta_flip=True)
f1 = metrics.f1_scores(ev.preds, ev.targets)
print(f"test accuracy {metrics.accuracy(ev.preds, ev.targets):.4f} | micro-F1 {f1['micro']:.4f} | "
      f"macro-F1 {f1['macro']:.4f} ({len(ev.targets)} images)")
viz.plot_confusion_matrix(metrics.confusion_matrix(ev.preds, ev.targets, 10), data.FASHION_CLASSES,
                          title="test set, rows normalised");

# %% [markdown]
# The confusion matrix shows where the errors are: shirts are confused with T-shirts, pullovers and
# coats, the upper-body garments that differ in details a 28x28 image barely keeps. Footwear and
# bags are almost never confused with clothing.
#
# ## Metrics on fixed tensors
#
# Checked cells can test metrics too, on tensors written in the cell. Micro-F1 pools all decisions
# (for single-label data it equals accuracy); macro-F1 averages the per-class F1 scores, so a rare
# class counts as much as a frequent one.

# %%
# NBVAL_CHECK_OUTPUT
y_true = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
y_pred = torch.tensor([0, 0, 0, 1, 1, 1, 2, 0])
print("accuracy", round(metrics.accuracy(y_pred, y_true), 4))
print("F1", {k: round(v, 4) for k, v in metrics.f1_scores(y_pred, y_true).items()})
print(metrics.confusion_matrix(y_pred, y_true, 3))

# %% [markdown]
# ## Exercises
#
# 1. **Predict a number.** How many parameters does the reference ResNet's first convolution have?
#    Check with `model.stem[0].weight.numel()`.
# 2. **Read a curve.** In the curves above, validation accuracy is *higher* than training accuracy
#    after the first epoch (and again after the last). Give two reasons.
# 3. **Change the scale.** Re-run the chapter with `COURSE_PROFILE=smoke`. Which cells print the same
#    output, and why can the others not?
# 4. **Top-k accuracy.** Write `top_k_accuracy(logits, targets, k)`: the share of images whose true
#    class is among the `k` classes with the largest logits. Apply it to the test set (`ev.logits`,
#    `ev.targets`) for k = 1, 2, 3, check it against scikit-learn's `top_k_accuracy_score`, and compare
#    k = 1 with the test accuracy printed above. How many of the errors are second choices?

# %% tags=["solution", "hide-input"]
# Solution 4: top-k accuracy from the logits, checked against scikit-learn.
from sklearn.metrics import top_k_accuracy_score


def top_k_accuracy(logits, targets, k):
    """The share of rows of ``logits`` (N, C) whose target is among their ``k`` largest entries."""
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).float().mean().item()


for k in (1, 2, 3):
    ours = top_k_accuracy(ev.logits, ev.targets, k)
    theirs = top_k_accuracy_score(ev.targets.numpy(), ev.logits.numpy(), k=k, labels=list(range(10)))
    print(f"top-{k} accuracy: ours {ours:.4f} | scikit-learn {theirs:.4f}")
errors = 1 - top_k_accuracy(ev.logits, ev.targets, 1)
second = top_k_accuracy(ev.logits, ev.targets, 2) - top_k_accuracy(ev.logits, ev.targets, 1)
print(f"errors {errors:.4f}, of which the true class was the second choice: {second:.4f} ({second / errors:.0%})")

# %% [markdown] tags=["solution"]
# ```{admonition} Solutions
# :class: dropdown
# 1. 3 x 3 kernels, 1 input channel, 16 output channels and no bias (a batch norm follows):
#    9 x 16 = 144 weights.
# 2. The training accuracy is averaged over an epoch during which the weights are still improving,
#    while validation accuracy is measured at the end of the epoch; training images are augmented
#    (crops, flips) while validation images are not; and training accuracy is measured in training
#    mode (batch norm uses each batch's statistics), validation accuracy in eval mode (running
#    statistics).
# 3. The checked cells (data shapes, one batch, parameter counts, metrics on fixed tensors) do not
#    depend on the profile. Training results depend on the number of images and epochs, and timings
#    depend on the machine, so nbval does not compare those cells; it only requires them to run
#    without error.
# 4. See the printout: top-1 is the test accuracy (the same arg-max), and scikit-learn agrees at every
#    k. Most errors are near misses: for about three errors in four (the last line) the true class is the
#    network's second choice. The matrix above shows where the errors lie: mostly among the
#    upper-body garments (shirt, T-shirt, pullover, coat).
# ```
