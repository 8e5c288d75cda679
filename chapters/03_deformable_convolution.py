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
# # 3. Deformable convolution
#
# A convolution reads its input on a rigid square grid: a 3x3 kernel always looks at the pixel and
# its eight neighbours, wherever it is and whatever the image shows. A **deformable convolution**
# {cite}`dai2017deformable` lets every output position
# move its nine sampling points, by offsets that another small convolution predicts from the input
# itself. This chapter writes it from scratch, checks it against torchvision's version, trains it on
# geometrically distorted images, looks at where it learns to read, and uses it in a network that
# has to *name* a geometric change.
#
# **Objectives.** After this chapter you can
# - write the deformable convolution as bilinear sampling followed by a matrix product, and prove it
#   equal to `torchvision.ops.deform_conv2d`, gradients included;
# - explain how the offsets are predicted, why they start at zero, and what DCNv2's modulation adds;
# - compare a regular and a deformable CNN fairly (same data, schedule, seeds and initial weights;
#   accuracy, loss and time as mean ± std, each difference with its 95% interval) on clean and distorted
#   test images, at several training budgets;
# - draw the learned sampling points over images, and test whether they follow each image's known
#   rotation and magnification;
# - build a residual classifier of image pairs, explain its 1x1-convolution shortcuts, and read its
#   confusion matrix by the number of changes, and check a gain against a regular model of the same size.
#
# The experiments follow a course assignment that compared a regular and a deformable CNN, and then
# trained a classifier of (original, changed) image pairs with seven labels. Here both run on
# Fashion-MNIST with distortions made by `course_utils.datasets.pairs`.

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

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn
from torchvision.ops import deform_conv2d

import course_utils
from course_utils import data, experiments, metrics, viz
from course_utils.budget import estimate_line
from course_utils.claims import Arm, Budget, Claim, Comparison, forest_rows, save_claims
from course_utils.intervals import combine, format_difference
from course_utils.datasets.pairs import PAIR_CHANGES, PAIR_LABELS, distort, distortion_params, make_pairs
from course_utils.io import atomic_torch_save
from course_utils.loader import TensorLoader
from course_utils.layers.deform import DeformConv2d, affine_scale_angle, bilinear_sample, deform_conv2d_reference
from course_utils.models.deform_nets import PairClassifier, TwoBlockCNN, grid_affines
from course_utils.summary import count_parameters
from course_utils.optim import OPTIMIZERS
from course_utils.train import evaluate, fit

viz.book_style()
rt = course_utils.setup(seed=0)

# %% [markdown]
# ## Configuration
#
# `cnn`: training images per class (10 classes), test images per class and the training budgets
# (epochs; each budget is a separate run with its own schedule; section 3 says at which the claim is judged)
# for the regular-vs-deformable comparison; `pair`: pairs *per label* (7 labels) for training, validation and test of
# the pair classifier. `optim` and `lr`: SGD with a one-cycle schedule on the CPU; the `gpu` profile
# uses the assignment's settings (Adam at 1e-4, batch 32; budgets of 5, 10 and 20 epochs, 20 being the
# assignment's). `backend` chooses which
# implementation of the deformable convolution trains the models; both compute the same numbers
# (checked below), and the timing cell below explains the choice.

# %%
cfg = course_utils.by_profile(
    smoke=dict(cnn=dict(per_class=40, test_per_class=10, epochs=[1, 2]), pair=dict(train=40, val=10, test=10, epochs=1),
               seeds=[0], batch=64, optim="sgd", lr=0.05, backend="reference"),
    cpu=dict(cnn=dict(per_class=200, test_per_class=200, epochs=[3, 8, 20]), pair=dict(train=500, val=150, test=300, epochs=5),
             seeds=[0, 1, 2], batch=64, optim="sgd", lr=0.05, backend="reference"),
    gpu=dict(cnn=dict(per_class=6000, test_per_class=1000, epochs=[5, 10, 20]), pair=dict(train=4000, val=600, test=600, epochs=20),
             seeds=[0, 1, 2], batch=32, optim="adam", lr=1e-4, backend="torchvision"),
)
print(estimate_line("03"))
cfg

# %% [markdown]
# ## 1. From a fixed grid to a deformable one
#
# A 3x3 convolution computes, at every output position $p$,
#
# $$ y(p) = \sum_{k=1}^{9} w_k \, x(p + p_k), \qquad p_k \in \{-1, 0, 1\}^2 , $$
#
# the same nine relative positions $p_k$ everywhere. When the object in the image is rotated,
# enlarged or bent, the pattern that the weights $w_k$ were trained to match no longer falls on those
# nine positions. Deeper layers, pooling and a lot of augmented data compensate, but the sampling
# itself never adapts.
#
# A deformable convolution adds a learned offset $\Delta p_k$ to each grid point:
#
# $$ y(p) = \sum_{k=1}^{9} w_k \, x(p + p_k + \Delta p_k). $$
#
# The offsets are fractional, so $x$ is read by **bilinear interpolation** between the four pixels
# around the point $q = (q_y, q_x)$:
#
# $$ x(q) = \sum_{r, c} \max(0, 1 - |q_y - r|)\, \max(0, 1 - |q_x - c|)\; x[r, c], $$
#
# a weighted average whose weights are differentiable in $q$, so the loss can push the offsets. A
# pixel outside the image counts as zero. The offsets themselves come from an ordinary convolution
# applied to the same input, with the same kernel size, stride and padding, with $2 \times 9 = 18$ output
# channels: a $(\Delta y, \Delta x)$ pair for each of the nine kernel points, at each output position.
# Both convolutions are trained together. DCNv2
# {cite}`zhu2019dcnv2` adds nine more output channels, squashed by a
# sigmoid into modulation scalars $m_k \in (0, 1)$: $y(p) = \sum_k w_k m_k x(p + p_k + \Delta p_k)$,
# so a kernel point can also *fade out* a sample.
#
# In `course_utils.layers.deform.DeformConv2d` the offset convolution starts with zero weights and bias:
# an untrained deformable layer reads the regular grid and *is* a regular convolution, and offsets
# grow only where the gradient asks for them.
#
# ### Check your understanding
#
# **a.** What exactly differs between a regular and a deformable convolution: the weights, the
# places they are applied, or both?
#
# ```{admonition} Answer
# :class: dropdown
# The weights are shared in both: one set of $w_k$ for every position. What changes is *where* they
# are applied. A regular convolution reads the fixed grid $p + p_k$ at every position; a deformable
# one reads $p + p_k + \Delta p_k$, and the offsets differ from one output position (and one image) to
# the next, because they are computed from the input.
# ```
#
# **b.** A deformable layer is trained on images in which objects appear at different sizes. What
# should its offsets do on an enlarged object, and why does that help?
#
# ```{admonition} Answer
# :class: dropdown
# Spread out from the centre of the kernel: the receptive field grows with the object, so the nine
# weights meet the same parts of the object that they meet on a small one. On a shrunken object the
# points should draw together. The next layer then sees features that vary less with scale, which is
# what dense tasks such as segmentation and detection, where objects come at every size, profit from.
# ```
#
# **c.** Why is a single fixed grid, shared by all kernels and all positions, a limitation under
# geometric deformation?
#
# ```{admonition} Answer
# :class: dropdown
# Because the correspondence between kernel weights and image content is fixed in advance. After a
# rotation, the pixel that the weight "above the centre" was trained on now lies beside it; after
# scaling it lies farther away. A regular CNN can only learn separate filters for each pose (more
# parameters, more data) or rely on pooling to blur the difference. The grid cannot follow the
# object, and the receptive field has the same shape on the background as on the object.
# ```
#
# **d.** How are the offsets computed, and what shape does that layer's output have for a 3x3 kernel
# on a 64-channel input whose output is 14x14?
#
# ```{admonition} Answer
# :class: dropdown
# By a regular convolution over the same input feature map, with the same kernel size, stride and
# padding as the deformable one, so that it has one output position per output position of the
# deformable layer. It has $2k^2 = 18$ output channels: $(\Delta y, \Delta x)$ for each of the nine
# kernel points (per offset group). For a batch of $B$ inputs of 64 channels its output is
# $(B, 18, 14, 14)$; its weights are $18 \times 64 \times 3 \times 3$ plus 18 biases. It is trained
# with the rest of the network by back-propagating through the bilinear interpolation.
# ```
#
# ## 2. Written from scratch, checked against torchvision
#
# `course_utils.layers.deform.deform_conv2d_reference` does it in three steps, with no loop over pixels:
# compute every sampling point (the grid plus the offsets), read the input there with four `gather`s
# (the bilinear interpolation above, "deformable im2col"), and multiply the result by the weights as
# one matrix product. It takes the same arguments and tensor layouts as
# `torchvision.ops.deform_conv2d`, so the two can be compared on the same random input, with offsets
# of up to 2.5 pixels so that some points fall outside the image:

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, 9, 8, generator=g, dtype=torch.float64)
w = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
b = torch.randn(6, generator=g, dtype=torch.float64)
off = (torch.rand(2, 18, 5, 4, generator=g, dtype=torch.float64) * 2 - 1) * 2.5  # stride 2, padding 1: 5x4 outputs
mask = torch.rand(2, 9, 5, 4, generator=g, dtype=torch.float64)
grad_out = torch.randn(2, 6, 5, 4, generator=g, dtype=torch.float64)
results = {}
for name, fn in (("ours", deform_conv2d_reference), ("torchvision", deform_conv2d)):
    leaves = [t.clone().requires_grad_(True) for t in (x, off, w, mask)]
    out = fn(leaves[0], leaves[1], leaves[2], b, stride=2, padding=1, mask=leaves[3])
    out.backward(grad_out)
    results[name] = [out.detach()] + [t.grad for t in leaves]
for i, what in enumerate(["output", "grad input", "grad offset", "grad weight", "grad mask"]):
    diff = (results["ours"][i] - results["torchvision"][i]).abs().max().item()
    print(f"{what:<12} ours vs torchvision: max abs diff < 1e-10 -> {diff < 1e-10}")
print("zero offsets equal F.conv2d:", torch.allclose(
    deform_conv2d_reference(x, torch.zeros_like(off), w, b, stride=2, padding=1),
    torch.nn.functional.conv2d(x, w, b, stride=2, padding=1)))

# %% [markdown]
# `tests/layers/test_deform.py` repeats this for several kernel sizes, strides, paddings, dilations, offset
# groups and weight groups. Bilinear sampling on a small example you can check by hand: the point
# (0.5, 1.25) lies between rows 0 and 1 (half-way) and columns 1 and 2 (a quarter of the way).

# %%
# NBVAL_CHECK_OUTPUT
img = torch.tensor([[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]])[None, None, None]  # (B, G, C, H, W)
pts_y, pts_x = torch.tensor([[[0.5, 0.0, -0.5, 1.0]]]), torch.tensor([[[1.25, 2.0, 1.0, 2.5]]])
print("values at (0.5, 1.25), (0, 2), (-0.5, 1), (1, 2.5):", bilinear_sample(img, pts_y, pts_x).flatten().tolist())

# %% [markdown]
# The first value is $0.5 (0.75 \cdot 10 + 0.25 \cdot 20) + 0.5 (0.75 \cdot 40 + 0.25 \cdot 50) = 27.5$;
# (0, 2) is a pixel, 20; half a pixel above the image, (-0.5, 1) reads half of the pixel below it,
# 5; and (1, 2.5) lies half a pixel right of the last column, so it keeps half of 50, 25.
#
# **What it costs.** One forward and backward pass of a regular 3x3 convolution, of torchvision's
# deformable one, and of ours, at the shape of the second block of the CNN below (a batch of 64
# maps of 32 channels at 14x14, best of three runs, the first of which also warms up). Each deformable
# layer includes its offset convolution. `benchmarks/bench_deform.py` measures the two convolutions of
# this CNN, the last-stage convolutions of a wider pair classifier (widths 32, 64, 128), and whole
# training steps of `TwoBlockCNN`.

# %%
import time

course_utils.runtime.seed_everything(0)
x_b = torch.randn(64, 32, 14, 14)
layers = {"regular nn.Conv2d": nn.Conv2d(32, 64, 3, padding=1, bias=False),
          "deformable, torchvision": DeformConv2d(32, 64, 3, padding=1, bias=False, backend="torchvision"),
          "deformable, ours": DeformConv2d(32, 64, 3, padding=1, bias=False, backend="reference")}
times = {k: float("inf") for k in layers}
for k, layer in layers.items():
    for _ in range(3):  # best of three; the first run also warms up
        t0 = time.perf_counter()
        layer(x_b.detach().requires_grad_(True)).square().mean().backward()
        times[k] = min(times[k], time.perf_counter() - t0)
for k, t in times.items():
    print(f"{k:<26} {t * 1000:7.1f} ms  ({t / times['regular nn.Conv2d']:.1f}x the regular conv)")

# %% [markdown]
# Here a deformable layer cost 5.8 times a regular one in our version and 47.5 times in torchvision's CPU
# kernel (the cell above): bilinear reads are scattered in memory where a
# regular convolution reads neighbours, the backward pass has to distribute every gradient to four
# pixels and differentiate the four weights, and the offset convolution comes on top. Which of the
# two deformable versions is faster on a CPU depends on the shape, on the cores and on what else the
# machine is doing: torchvision's CPU kernel runs its sampling loops element by element, ours does the
# same work as a few large tensor operations (`gather`, one matrix product) that the library spreads
# over the cores. The printed times are one measurement on a shared machine; run the cell again and
# they move. `benchmarks/bench_deform.py` times both at several shapes and as whole training steps of
# this chapter's models; on the course's 2-core machines ours has been the faster of the two there, as in
# the cell above (38.7 against 319.2 ms),
# which is why the `cpu` profile trains with it. The two give the same results up to rounding. On a GPU, torchvision's CUDA kernel is the one to use.
#
# (sec-c15)=
# ## 3. Regular vs deformable CNN on distorted images
#
# **The data.** Each Fashion-MNIST image is rotated, scaled and moved at random by one affine warp
# (`course_utils.datasets.pairs.Distortion`): at strength $s$, rotation up to $\pm 25 s$ degrees,
# magnification between $2^{-0.25 s}$ and $2^{0.25 s}$, and a shift of up to $10 s$ % of the
# image on each axis. The models train on strength 1 and are tested on clean images (strength 0),
# on the training distribution (strength 1) and on stronger distortions (strength 1.5). Every set is
# drawn once with a fixed seed, so all runs see the same images.

# %%
# NBVAL_CHECK_OUTPUT
x_all, y_all = data.load_fashion_mnist("train")
x_test_all, y_test_all = data.load_fashion_mnist("test")
fixed = data.stratified_subset(y_test_all, 30, seed=0)
a, b2 = distort(x_test_all[fixed], 1.0, seed=7), distort(x_test_all[fixed], 1.0, seed=7)
print("300 test images, 30 per class:", torch.bincount(y_test_all[fixed]).tolist())
print("same seed, same distortion:", torch.equal(a, b2), "| dtype", a.dtype, "| shape", tuple(a.shape))
print("mean |pixel change| at strength 0.5 / 1 / 1.5:",
      [round((distort(x_test_all[fixed], s, seed=7).float() - x_test_all[fixed].float()).abs().mean().item() / 255, 2)
       for s in (0.5, 1.0, 1.5)])

# %%
STRENGTH, STRONG = 1.0, 1.5
train_idx = data.stratified_subset(y_all, cfg["cnn"]["per_class"], seed=0)
test_idx = data.stratified_subset(y_test_all, cfg["cnn"]["test_per_class"], seed=0)
cnn_train = (distort(x_all[train_idx], STRENGTH, seed=1), y_all[train_idx])
cnn_tests = {"clean": (x_test_all[test_idx], y_test_all[test_idx]),
             "distorted": (distort(x_test_all[test_idx], STRENGTH, seed=2), y_test_all[test_idx]),
             "strongly distorted": (distort(x_test_all[test_idx], STRONG, seed=3), y_test_all[test_idx])}
print(f"training: {len(cnn_train[1])} images at strength {STRENGTH}; each test set: {len(test_idx)} images")
show = torch.cat([cnn_tests[k][0][:8] for k in cnn_tests])
viz.show_images(show, [k.split()[0] if i % 8 == 0 else "" for k in cnn_tests for i in range(8)], ncols=8);

# %% [markdown]
# **The models.** `TwoBlockCNN`: two blocks of (3x3 convolution, batch norm, ReLU, 2x2 max-pool) with
# 32 and 64 channels, then one linear layer over the 64 x 7 x 7 features. `deformable=True` replaces
# both convolutions by `DeformConv2d` and changes nothing else; the only new parameters are those of
# the two offset convolutions.
#
# A fair comparison starts both models from the same weights. `DeformConv2d` builds its offset
# convolution without drawing random numbers (its zeros need none) and draws its own weights exactly as
# `nn.Conv2d` does, in the same order; so under one seed the two CNNs start from identical weights in
# every layer they share, with nothing copied. Runs paired by seed are then paired in their data, their
# batch order *and* their initial weights.

# %%
# NBVAL_CHECK_OUTPUT
course_utils.runtime.seed_everything(0)
regular = TwoBlockCNN()
course_utils.runtime.seed_everything(0)
deformable = TwoBlockCNN(deformable=True)
print(f"TwoBlockCNN regular:    {count_parameters(regular):,} parameters")
print(f"TwoBlockCNN deformable: {count_parameters(deformable):,} parameters "
      f"(offset convs: {count_parameters(deformable.block1[0].offset_conv):,} + "
      f"{count_parameters(deformable.block2[0].offset_conv):,})")
print("built under the same seed, every shared weight identical (nothing copied):",
      all(torch.equal(deformable.state_dict()[k], v) for k, v in regular.state_dict().items()))
probe = torch.randn(4, 1, 28, 28)
print("at initialisation the deformable CNN equals the regular one:",
      torch.allclose(deformable.eval()(probe), regular.eval()(probe), atol=1e-5))
print("output shape:", tuple(regular(probe).shape))

# %% [markdown]
# Each run trains one model with one seed for one budget and reports, on the training set and the three
# test sets, accuracy and mean cross-entropy (both measured in evaluation mode after training), and the
# mean wall time of a training epoch. The budgets are separate runs, each with its own one-cycle schedule
# (not snapshots of one long run). `experiments.run_grid` keeps each finished run on disk, so an
# interrupted run of this notebook resumes.

# %%
NORMALIZE = dict(mean=data.FASHION_MEAN, std=data.FASHION_STD)
RUNS = experiments.runs_dir("ch03")


def train(model, train_data, val_data, epochs, seed):
    loader = TensorLoader(*train_data, cfg["batch"], shuffle=True, drop_last=True, seed=seed, **NORMALIZE)
    val = TensorLoader(*val_data, 1000, **NORMALIZE) if val_data is not None else None
    opt, sched = OPTIMIZERS[cfg["optim"]](model, cfg["lr"], epochs * len(loader))  # SGD one-cycle or constant Adam
    return fit(model, loader, val, epochs=epochs, optimizer=opt, scheduler=sched, verbose=False)


def scores(model, dataset):
    ev = evaluate(model, TensorLoader(*dataset, 1000, **NORMALIZE))
    return metrics.accuracy(ev.preds, ev.targets), ev.loss, ev.preds


def run_cnn(config, seed):
    course_utils.runtime.seed_everything(seed)
    model = TwoBlockCNN(deformable=config["deformable"], backend=cfg["backend"])
    history = train(model, cnn_train, None, config["epochs"], seed)
    out = {"epoch_seconds": float(np.mean(history["seconds"])), "fastest_epoch_seconds": float(min(history["seconds"]))}
    for name, dataset in {"train": cnn_train, **cnn_tests}.items():
        acc, loss, _ = scores(model, dataset)
        out[f"{name} acc"], out[f"{name} loss"] = acc, loss
    if config["deformable"] and not config.get("modulated") and config["epochs"] == max(BUDGETS):  # plain DCN only
        atomic_torch_save(model.state_dict(), RUNS / f"deformable-cnn-s{seed}.pt")  # for section 4
    return out


BUDGETS = cfg["cnn"]["epochs"]
cnn_configs = {f"{name}, {epochs} ep": {"deformable": name == "deformable", "per_class": cfg["cnn"]["per_class"],
                                        "test_per_class": cfg["cnn"]["test_per_class"], "epochs": epochs,
                                        "optim": cfg["optim"], "lr": cfg["lr"]}
               for epochs in BUDGETS for name in ("regular", "deformable")}
cnn_runs = experiments.run_grid(cnn_configs, cfg["seeds"], run_cnn, cache_dir=RUNS)
cnn_runs["model"] = [v.split(",")[0] for v in cnn_runs["variant"]]
cnn_runs["epochs"] = [cnn_configs[v]["epochs"] for v in cnn_runs["variant"]]
# C15 is judged at the largest budget at which neither model fits all its training images (mean training
# accuracy below 99.5%): at 100% a difference in fitting cannot show. The rule looks at the arms' levels, not
# at their gap, but it was written after the course's cpu runs had shown that 20 epochs saturate, so the end
# of the chapter also prints the claim's verdict at every budget.
fit_level = cnn_runs.groupby(["epochs", "model"])["train acc"].mean().unstack().max(axis=1)
JUDGED = max([e for e in BUDGETS if fit_level[e] < 0.995] or [min(BUDGETS)])
print(f"mean training accuracy of the better-fitting model by budget: {(100 * fit_level).round(2).to_dict()}; "
      f"C15 is judged at {JUDGED} epochs")

# %%
ACC = ["train acc", "clean acc", "distorted acc", "strongly distorted acc"]
LOSS = ["train loss", "distorted loss"]
judged = cnn_runs[cnn_runs["epochs"] == JUDGED].assign(variant=cnn_runs["model"])  # variant: regular / deformable
print(f"at the judged budget, {JUDGED} epochs:")
cnn_summary = experiments.summarize(judged, ACC + LOSS + ["epoch_seconds"], baseline="regular")
table = experiments.format_mean_std(cnn_summary, ACC)
table = table.join(experiments.format_mean_std(cnn_summary, LOSS, scale=1.0, digits=3).drop(columns="seeds"))
table["s / epoch"] = [f"{m:.1f} ± {s:.1f}" if not np.isnan(s) else f"{m:.1f}"
                      for m, s in zip(cnn_summary["epoch_seconds_mean"], cnn_summary["epoch_seconds_std"])]
fastest = judged.groupby("variant", sort=False)["fastest_epoch_seconds"].min()
table["fastest epoch (s)"] = [f"{fastest[v]:.1f}" for v in table.index]
table.T  # one row per measure, one column per model

# %% [markdown]
# Accuracies in percent, losses in nats, mean ± std over the seeds; Δ is deformable minus regular, the
# difference of the means (a description, not a test). What a difference is worth is its **95%
# confidence interval**. Both models ran with the same seeds, so on the same training images in the
# same batch order, from the same initial weights in every shared layer (checked above). The
# differences are therefore paired by seed, and the interval is a t interval on the per-seed
# differences (`Arm.minus(..., paired=True)`).
# With three seeds it is wide: the mean difference ± 4.3 standard errors (the t quantile with two
# degrees of freedom). The figure below draws it for each accuracy, with the assignment's single-run
# difference (×) where it reported one.
#
# On a machine shared with other work, the mean wall time of an epoch depends on what else runs at the
# time; the fastest epoch of a run is the steadier measure of its cost: in the run lines above, the
# 20-epoch runs of seed 0 have a mean epoch of 5.3 s (regular) and 14.9 s (deformable) against fastest
# epochs of 0.55 s and 2.45 s, most likely because other work ran on the machine at the same time (the
# load was not measured). At the judged budget too, deformable seed 2 averaged 4.18 s per epoch against
# a fastest epoch of 2.75 s, which is what widens the table's 3.4 ± 0.7. The table therefore gives times
# at the judged budget only, and the fastest epoch, not the mean, is what the claim tests. It shows the fastest of all
# runs of a variant there; the claim at the end of the chapter compares the runs' fastest epochs seed
# by seed. The paired difference of the fastest epochs is about 2 s at every budget: +2.02 s at 3 and at
# 20 epochs, +2.15 s at 8 (the lines printed with the claims at the end of the chapter give each interval).

# %%
SOURCE_CNN = {"train acc": 1.04, "distorted acc": 0.0}  # the assignment's one run: 90.03 − 88.99 train, 72 − 72 test
cnn_rows = []
for col in ACC:
    diff, ci = Arm.from_rows(judged, "deformable", col, scale=100).minus(
        Arm.from_rows(judged, "regular", col, scale=100), paired=True)
    print(f"{col:<24} deformable - regular, points (95% interval): {format_difference(diff, ci)}")
    cnn_rows.append({"label": col, "diff": diff, "ci95": ci, "source": SOURCE_CNN.get(col)})
time_ratio = fastest["deformable"] / fastest["regular"]
print(f"time per epoch (fastest epochs): deformable / regular = {time_ratio:.1f}x")
viz.forest_plot(cnn_rows, xlabel="deformable − regular, accuracy (points)",
                title=f"TwoBlockCNN, {JUDGED} epochs: mean difference and 95% interval");

# %% [markdown]
# **Against the budget.** Does "fits a little better" depend on how long the models train? The same
# comparison at every budget: training accuracy (the distorted training images, in evaluation mode)
# and accuracy on the distorted test images, and the paired difference with its 95% interval (the printed
# lines add the training and distorted-test losses, in nats). The gap
# between the solid and the dashed lines of a model is how much it fits its training images beyond
# what carries over to new ones.

# %%
budget_rows = []
for epochs in BUDGETS:
    at = cnn_runs[cnn_runs["epochs"] == epochs].assign(variant=cnn_runs["model"])
    for col, scale in (("train acc", 100), ("distorted acc", 100), ("train loss", 1), ("distorted loss", 1)):
        dfm, reg = (Arm.from_rows(at, m, col, scale=scale) for m in ("deformable", "regular"))
        diff, ci = dfm.minus(reg, paired=True)
        budget_rows.append({"epochs": epochs, "metric": col, "regular": np.mean(reg.values),
                            "deformable": np.mean(dfm.values), "diff": diff, "ci95": ci})
        digits = 2 if scale == 100 else 4
        print(f"{epochs:>3} epochs, {col:<14} regular {np.mean(reg.values):6.{digits}f}, deformable "
              f"{np.mean(dfm.values):6.{digits}f}; deformable - regular {format_difference(diff, ci, digits)}")
budget_table = pd.DataFrame(budget_rows)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for col, style, marker in (("train acc", "-", "o"), ("distorted acc", "--", "s")):
    rows = budget_table[budget_table["metric"] == col]
    for i, m in enumerate(("regular", "deformable")):
        axes[0].plot(rows["epochs"], rows[m], style, marker=marker, color=f"C{i}", label=f"{m}, {col}")
    ci = np.array([c if c is not None else (np.nan, np.nan) for c in rows["ci95"]])
    err = np.abs(ci.T - rows["diff"].to_numpy())
    axes[1].errorbar(rows["epochs"], rows["diff"], yerr=err, fmt=style + marker, capsize=3, label=col)
axes[0].set(xlabel="epochs (budget)", ylabel="accuracy (%)", title="mean over seeds")
axes[1].axhline(0, color="grey", lw=0.8)
axes[1].set(xlabel="epochs (budget)", ylabel="deformable − regular (points)", title="paired difference, 95% interval")
for ax in axes:
    ax.set_xticks(BUDGETS)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# **What the budgets show.** In the course's `cpu` runs both models fitted their 2,000 training images
# completely at 20 epochs (100.00% each), so there the training *accuracy* has no room left for a
# difference (the training loss still has). The rule that picks the judged budget (the largest at which
# the better-fitting model's mean training accuracy stays below 99.5%) was written after these runs had
# shown that 20 epochs saturate. It looks only at how well the two models fit, not at their difference,
# and it picks 8 epochs. The choice does not decide the verdict: with the same three tests, C15 comes out
# inconclusive at 3, 8 and 20 epochs alike (the lines "C15 at ... epochs" printed with the claims at the
# end of the chapter). At 8 epochs the deformable CNN fitted its training images *less* well on average
# (92.70% against 94.80%, −2.10 points, interval −6.25 to +2.05), and at 3 epochs the two were level
# (−0.53, −2.70 to +1.64): at no budget did "fits a little better" show. The training loss says the same
# at 20 epochs (0.0125 against 0.0090, the deformable one slightly higher). On the distorted test images
# the deformable CNN goes from level (−0.25 points at 3 epochs, interval −2.58 to +2.08) to ahead as the
# budget grows: +1.23 at 8 (−1.19 to +3.66), +2.13 at 20 (+0.30 to +3.96). Past 8 epochs both models
# over-fit: their distorted-test loss rises (regular 0.78 → 1.13, deformable 0.72 → 1.02 nats, seed
# means) and their mean distorted-test accuracy falls, the regular CNN's further (74.05% to 72.63%,
# against 75.28% to 74.77%).

# %% [markdown]
# ## 4. Where the deformable CNN reads
#
# `DeformConv2d.sampling_points` returns, for every output position, where its nine kernel points
# read the input. Chaining the two layers shows what one output of the second block looks at: its
# nine points on the 14x14 map each fall in a 2x2 pooling window of the first block's output, whose
# own nine points read the image, so $9 \times 9 = 81$ points in the image. Top row: the regular
# grid (what the untrained model, or the regular CNN, reads); bottom row: the trained deformable CNN
# of the first seed (largest budget), on the same distorted test images. The cross is the output position.

# %%
trained = {}
for seed in cnn_runs["seed"].unique():  # the deformable CNN of each seed at the largest budget, saved by run_cnn
    trained[seed] = TwoBlockCNN(deformable=True, backend=cfg["backend"]).eval()
    trained[seed].load_state_dict(torch.load(RUNS / f"deformable-cnn-s{seed}.pt", map_location="cpu", weights_only=True))
untrained = TwoBlockCNN(deformable=True, backend=cfg["backend"]).eval()


@torch.no_grad()
def composed_points(model, image, row, col):
    """The 81 image positions (row, col) that block-2 output (row, col) of ``model`` reads through both layers."""
    x = (image.float()[None] / 255 - NORMALIZE["mean"]) / NORMALIZE["std"]
    p1 = model.block1[0].sampling_points(x)[0]  # (9, 28, 28, 2): image positions per block-1 output
    p2 = model.block2[0].sampling_points(model.block1(x))[0, :, row, col]  # (9, 2) on the 14x14 map
    # a point q of the 14x14 map pools block-1 outputs 2q .. 2q+1; take the one nearest its centre 2q + 0.5
    centre = (2 * p2 + 0.5).round().long().clamp(0, 27)
    return torch.cat([p1[:, r, c] for r, c in centre.tolist()])  # (81, 2)


ROW, COL = 7, 7
examples = cnn_tests["distorted"][0][[0, 3, 5, 9]]
fig, axes = plt.subplots(2, len(examples), figsize=(2.2 * len(examples), 4.6))
for j, image in enumerate(examples):
    for i, (title, model) in enumerate((("regular grid", untrained), ("learned", trained[cfg["seeds"][0]]))):
        pts = composed_points(model, image, ROW, COL)
        ax = axes[i, j]
        ax.imshow(image[0], cmap="gray")
        ax.scatter(pts[:, 1], pts[:, 0], s=5, c="tab:red" if i else "tab:cyan")
        ax.plot(2 * COL + 0.5, 2 * ROW + 0.5, "x", color="yellow", ms=8, mew=2)
        ax.set(xlim=(-2, 29), ylim=(29, -2), xticks=[], yticks=[])
        if j == 0:
            ax.set_ylabel(title)
fig.tight_layout()

# %% [markdown]
# **Do the offsets undo the distortion?** Every distorted test image was rotated by a known angle and
# magnified by a known zoom (`distortion_params` recomputes both from the seed that `distort` used). A
# layer that undid the distortion would spread its grid by the image's zoom and turn it by the image's
# angle: the map from the regular grid to its sampling points would be zoom x rotation(angle)
# (`tests/datasets/test_pairs.py` checks this convention on warped blobs). For each image and each layer,
# `grid_affines` fits that 2x2 map by least squares, at every output position over its nine points
# (each position's own shift removed), pooled over the positions on the garment (pixels above a quarter
# of full brightness; for block 2, the 2x2 windows that touch one). `affine_scale_angle` reads the map's
# scale $\sqrt{|\det A|}$ and rotation angle. Over the distorted test images, for each seed's
# trained model: the mean learned scale and angle, their Pearson correlation $r$ with the true log
# zoom and angle (95% interval from `scipy.stats.pearsonr`), and the slope of the least-squares line
# (1 would mean the grid follows the distortion fully, 0 not at all).

# %%
true = distortion_params(len(test_idx), STRENGTH, seed=2)  # what distort(..., seed=2) did to each test image
images = cnn_tests["distorted"][0]
x_dist = (images.float() / 255 - NORMALIZE["mean"]) / NORMALIZE["std"]
on_garment = (images[:, 0] > 64).float()  # (N, 28, 28)
fit_rows, fits = [], {}
for seed in trained:
    for layer, A in grid_affines(trained[seed], x_dist, on_garment).items():
        scale, angle = affine_scale_angle(A)
        fits[seed, layer] = {"scale": scale.log2(), "angle": angle.rad2deg()}
        for what, learned, known in (("scale", scale.log2(), true["zoom"].log2()),
                                     ("angle", angle.rad2deg(), true["angle"].rad2deg())):
            r = stats.pearsonr(known.numpy(), learned.numpy())
            lo, hi = r.confidence_interval(0.95)
            fit_rows.append({"seed": seed, "layer": layer, "quantity": what,
                             "learned mean ± std": f"{learned.mean():.3f} ± {learned.std():.3f}",
                             "r [95% interval]": f"{r.statistic:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                             "slope": round(stats.linregress(known.numpy(), learned.numpy()).slope, 3),
                             "r": r.statistic, "ci95": (lo, hi)})
fit_table = pd.DataFrame(fit_rows)
print(f"{len(images)} distorted test images; scale as log2 (0 = the regular grid's spread), angle in degrees")
fit_table.drop(columns=["r", "ci95"]).set_index(["seed", "layer", "quantity"])

# %%
seed0 = cfg["seeds"][0]
fig, axes = plt.subplots(2, 2, figsize=(7.5, 5.8))
for i, layer in enumerate(("block1", "block2")):
    for j, (what, known, unit) in enumerate((("scale", true["zoom"].log2(), "log2"), ("angle", true["angle"].rad2deg(), "deg"))):
        ax = axes[i, j]
        ax.scatter(known, fits[seed0, layer][what], s=3, alpha=0.3)
        r = fit_table.query("seed == @seed0 and layer == @layer and quantity == @what")["r"].item()
        ax.set(xlabel=f"true {what} of the image ({unit})", ylabel=f"learned {what} ({unit})",
               title=f"{layer}, seed {seed0}: r = {r:+.2f}")
        ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# **What it shows: the grids do not follow the distortion.** In every seed and both layers the
# correlation between the learned and the true scale or angle is close to zero: $|r| < 0.1$ in all twelve
# rows, with signs that change from seed to seed (block 2's scale: +0.098, +0.089 and −0.053) except
# for block 1's scale, slightly negative in all three seeds (−0.058, −0.072 and −0.068), and
# slopes between −0.274 and +0.521 where following the distortion fully would give 1. Small intervals that exclude zero come from the 2,000 images, not from a relation
# that matters: an $r$ of 0.1 explains 1% of the variance. What the layers do learn is a seed-specific
# average reshaping, with a large image-to-image spread that is unrelated to the image's zoom and angle
# (block 2: std 0.19–0.85 in log2 scale, 10–13 degrees in angle): on average the second block draws its
# grid together (mean log2 scale −0.47, −1.54 and −0.79, i.e. to 72%, 34% and 58% of the regular spread)
# and turns it by a seed-specific angle (−15, +5 and +22 degrees). Around that average the grid changes
# from image to image and from position to position; undoing each image's rotation and magnification is
# not what these small networks learned. (A mean offset length could not have told these apart: a grid that
# shrinks the same way on every image moves its points as far as one that follows each image.)

# %% [markdown]
# (sec-c16)=
# ## 5. Naming a geometric change: the pair classifier
#
# **The task.** Given an image and a changed copy of it, say what changed. `make_pairs` draws
# a Fashion-MNIST image and applies one of seven changes, with balanced labels:
#
# | label | change | how |
# |---|---|---|
# | 0 | unchanged | the same image twice |
# | 1 | displacement | moved by 2-4 pixels in a random direction |
# | 2 | rotation | rotated by 15-30 degrees (either way), then the largest square with no empty corners is cut out and resized back to 28x28 |
# | 3 | scaling | magnified by 1.15-1.4 about the centre and cropped back to 28x28 |
# | 4-6 | displacement + rotation, displacement + scaling, rotation + scaling | both changes |
#
# Note what the crop does: a rotated image always comes back *magnified* as well, by
# $|\cos\theta| + |\sin\theta|$ (1.22-1.37 here), so "rotation" and "scaling" are not as far apart
# as their names suggest. The images of a pair are stacked as two channels, original first.

# %%
# NBVAL_CHECK_OUTPUT
pairs_fixed, labels_fixed = make_pairs(x_test_all[:2000], 20, seed=0)
print("140 pairs, label counts:", torch.bincount(labels_fixed).tolist())
print("number of changes per label:", dict(zip(PAIR_LABELS, PAIR_CHANGES)))
print("unchanged pairs identical:", bool((pairs_fixed[labels_fixed == 0, 0] == pairs_fixed[labels_fixed == 0, 1]).all()),
      "| changed pairs all differ:", bool((pairs_fixed[labels_fixed != 0, 0] != pairs_fixed[labels_fixed != 0, 1]).flatten(1).any(1).all()))
white = torch.full((140, 1, 28, 28), 255, dtype=torch.uint8)
wp, wl = make_pairs(white, 20, seed=0)
print("rotation crop on a white image, darkest changed pixel:",
      {PAIR_LABELS[k]: int(wp[wl == k, 1].min()) for k in (2, 3, 6)})

# %%
pair_train = make_pairs(x_all[:50_000], cfg["pair"]["train"], seed=1)
pair_val = make_pairs(x_all[50_000:], cfg["pair"]["val"], seed=2)
pair_test = make_pairs(x_test_all, cfg["pair"]["test"], seed=3)
print(f"pairs: train {len(pair_train[1])}, val {len(pair_val[1])}, test {len(pair_test[1])} "
      f"(sources: training images 0-49,999, 50,000-59,999 and the test images)")
first = [int((pair_train[1] == k).nonzero()[0]) for k in range(7)]
viz.show_images(pair_train[0][first].transpose(0, 1).reshape(14, 1, 28, 28),
                [f"{k}: {PAIR_LABELS[k]}" for k in range(7)] + ["changed"] * 7, ncols=7, size=1.6);

# %% [markdown]
# **The model.** `PairClassifier`: a 3x3 stem, then three stages of residual blocks with 16, 32 and
# 64 channels at 28x28, 14x14 and 7x7, global average pooling and a linear layer with 7 outputs. A
# residual block adds its input to the output of two 3x3 convolutions. At the first block of stages 2
# and 3 that sum is impossible as it stands: the block has *more channels* and *half the resolution*
# of its input. Its shortcut is therefore a **1x1 convolution** with as many output channels as the
# block (32 or 64) and the block's stride 2, with **padding 0**: a 1x1 kernel needs no border to keep
# the size, and padding would add a ring of zeros, making the shortcut's output larger than the
# block's. It is a learned linear mixing of the channels at each pixel, the cheapest layer that can
# change the channel count. `deformable_last_stage=True` makes the two 3x3 convolutions of stage 3
# deformable.
#
# The offset convolutions add parameters, so a deformable model that wins might win by its size
# alone. A third model answers that: the regular classifier with a wider stage 3 (74 channels instead
# of 64), which has as many parameters as the deformable one (within 0.2%).

# %%
# NBVAL_CHECK_OUTPUT
WIDTHS, WIDE = (16, 32, 64), (16, 32, 74)
pc, pc_def = PairClassifier(widths=WIDTHS), PairClassifier(widths=WIDTHS, deformable_last_stage=True)
pc_wide = PairClassifier(widths=WIDE)
print(f"PairClassifier:                     {count_parameters(pc):,} parameters")
print(f"PairClassifier, deformable stage 3: {count_parameters(pc_def):,} parameters")
print(f"PairClassifier, wider stage 3 (74): {count_parameters(pc_wide):,} parameters "
      f"({count_parameters(pc_wide) / count_parameters(pc_def) - 1:+.1%} vs the deformable one)")
for name in ("stage1", "stage2", "stage3"):
    sc = getattr(pc, name)[0].shortcut
    print(f"{name} shortcut:", "identity" if isinstance(sc, nn.Identity) else
          f"1x1 conv {sc[0].in_channels}->{sc[0].out_channels}, stride {sc[0].stride[0]}, padding {sc[0].padding[0]} + BN")
print("output for 2 pairs:", tuple(pc(torch.zeros(2, 2, 28, 28)).shape))


# %%
def run_pairs(config, seed):
    course_utils.runtime.seed_everything(seed)
    model = PairClassifier(widths=tuple(config["widths"]), deformable_last_stage=config["deformable_last_stage"],
                           backend=cfg["backend"])
    history = train(model, pair_train, pair_val, cfg["pair"]["epochs"], seed)
    test_acc, test_loss, preds = scores(model, pair_test)
    return {"train acc": history.last["train_acc"], "val acc": history.last["val_acc"], "test acc": test_acc,
            "train loss": history.last["train_loss"], "val loss": history.last["val_loss"], "test loss": test_loss,
            "epoch_seconds": float(np.mean(history["seconds"])), "fastest_epoch_seconds": float(min(history["seconds"])),
            "curve_train_loss": history["train_loss"], "curve_val_loss": history["val_loss"],
            "test_preds": preds.tolist()}


PAIR_VARIANTS = {"regular": (WIDTHS, False), "deformable stage 3": (WIDTHS, True), "regular, wider": (WIDE, False)}
pair_runs = experiments.run_grid(
    {name: {"deformable_last_stage": d, "widths": list(w), **cfg["pair"], "optim": cfg["optim"], "lr": cfg["lr"]}
     for name, (w, d) in PAIR_VARIANTS.items()}, cfg["seeds"], run_pairs, cache_dir=RUNS)

# %% tags=["full-width"]
y_pair_test = pair_test[1]
changes = torch.tensor(PAIR_CHANGES)[y_pair_test]
for k in range(7):
    pair_runs[f"acc {PAIR_LABELS[k]}"] = [metrics.accuracy(torch.tensor(p)[y_pair_test == k], y_pair_test[y_pair_test == k])
                                          for p in pair_runs["test_preds"]]
for n in (0, 1, 2):
    pair_runs[f"acc {n} changes"] = [metrics.accuracy(torch.tensor(p)[changes == n], y_pair_test[changes == n])
                                     for p in pair_runs["test_preds"]]
pair_runs["one - two changes"] = pair_runs["acc 1 changes"] - pair_runs["acc 2 changes"]
PAIR_ACC = ["train acc", "val acc", "test acc"]
pair_summary = experiments.summarize(pair_runs, PAIR_ACC + ["test loss", "epoch_seconds"], baseline="regular")
ptable = experiments.format_mean_std(pair_summary, PAIR_ACC)
ptable["test loss"] = [f"{m:.3f} ± {s:.3f}" if not np.isnan(s) else f"{m:.3f}"
                       for m, s in zip(pair_summary["test loss_mean"], pair_summary["test loss_std"])]
ptable["s / epoch"] = [f"{m:.1f}" for m in pair_summary["epoch_seconds_mean"]]
ptable["fastest epoch (s)"] = [f"{t:.1f}" for t in pair_runs.groupby("variant", sort=False)["fastest_epoch_seconds"].min()]
ptable

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.3))
for i, name in enumerate(PAIR_VARIANTS):
    for j, (_, run) in enumerate(pair_runs[pair_runs.variant == name].iterrows()):
        epochs = range(1, len(run["curve_train_loss"]) + 1)
        ax.plot(epochs, run["curve_train_loss"], "-", color=f"C{i}", marker="o", ms=3, label=f"{name} train" if j == 0 else None)
        ax.plot(epochs, run["curve_val_loss"], "--", color=f"C{i}", marker="o", ms=3, label=f"{name} val" if j == 0 else None)
ax.set(xlabel="epoch", ylabel="cross-entropy", title="pair classifier: loss per epoch (one line per seed)")
ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# **Confusion matrices** of the test pairs (scikit-learn's `confusion_matrix`, rows the true label,
# summed over the seeds and normalised per row), for the regular and the deformable classifier:

# %%
short = ["none", "disp", "rot", "scale", "disp+rot", "disp+scale", "rot+scale"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
cms = {}
for ax, name in zip(axes, ("regular", "deformable stage 3")):
    preds = [p for p in pair_runs[pair_runs.variant == name]["test_preds"]]
    cm = sum(sk_confusion_matrix(y_pair_test.numpy(), np.array(p), labels=range(7)) for p in preds)
    assert (cm == sum(metrics.confusion_matrix(torch.tensor(p), y_pair_test, 7).numpy() for p in preds)).all()
    cms[name] = cm
    viz.plot_confusion_matrix(cm, short, title=name, ax=ax)
fig.tight_layout()
print("regular model, counts summed over seeds (rows: true label):")
print(pd.DataFrame(cms["regular"], index=short, columns=short).to_string())

# %%
cols = [f"acc {l}" for l in PAIR_LABELS] + [f"acc {n} changes" for n in (0, 1, 2)]
per_class = experiments.format_mean_std(experiments.summarize(pair_runs, cols), cols).drop(columns="seeds").T
per_class.index = [c.removeprefix("acc ") for c in cols]
per_class

# %% [markdown]
# Per-label test accuracy and accuracy by the number of changes (0, 1 or 2), percent, mean ± std
# over the seeds. Below, for each model, one change against two as a paired 95% interval (the same
# runs give both accuracies), the label with the lowest mean accuracy, and a figure of the deformable
# model minus the regular one, overall and per label, and minus the parameter-matched wider one,
# each with its paired 95% interval (all three models ran with the same seeds, so on the same pairs
# in the same order; the deformable and the regular one also from the same initial weights).

# %%
ps = experiments.summarize(pair_runs, cols)
hardest = {name: PAIR_LABELS[int(np.argmin([ps.loc[name, f"acc {l}_mean"] for l in PAIR_LABELS]))] for name in PAIR_VARIANTS}
for name in PAIR_VARIANTS:
    one, two = (Arm.from_rows(pair_runs, name, f"acc {n} changes", scale=100) for n in (1, 2))
    print(f"{name}: one change {np.mean(one.values):.2f} vs two changes {np.mean(two.values):.2f} "
          f"(difference and 95% interval {format_difference(*one.minus(two, paired=True))}); "
          f"hardest label: {hardest[name]}")
pair_rows = []
for other, cols in (("regular", PAIR_ACC + [f"acc {l}" for l in PAIR_LABELS]), ("regular, wider", PAIR_ACC)):
    for col in cols:
        diff, ci = Arm.from_rows(pair_runs, "deformable stage 3", col, scale=100).minus(
            Arm.from_rows(pair_runs, other, col, scale=100), paired=True)
        shown = col if col in PAIR_ACC else f"test acc: {col.removeprefix('acc ')}"
        pair_rows.append({"label": shown if other == "regular" else f"{shown} (vs wider)", "diff": diff, "ci95": ci})
        print(f"deformable stage 3 - {other}: {shown}, points (95% interval): {format_difference(diff, ci)}")
viz.forest_plot(pair_rows, xlabel="deformable stage 3 − regular (or wider regular), accuracy (points)",
                title="pair classifier: mean difference and 95% interval");

# %% [markdown]
# ## 6. What it means
#
# Each claim is judged by the 95% interval of a mean difference over the seeds, against a test declared
# from the claim's words before the runs (for C15 the budget at which it is judged was fixed after the
# runs; see section 3): *greater* or *less* is **supported** when the interval lies entirely on the
# claimed side of zero; *equivalent* is supported when it lies inside the declared margin; a claim is
# **contradicted** when the interval lies entirely on the other side (or outside the margin), and
# **inconclusive** otherwise. An inconclusive claim is not a failed one: three seeds could not tell.
#
# **Regular vs deformable on distorted images.** The deformable model has about 11% more parameters (its
# offset convolutions add 5,382 to the regular model's 50,282); under one seed the two start from
# identical weights in every shared layer (section 3 checks it, nothing copied), with the same images in
# the same order: a difference between them comes from the deformable layers, their offset convolutions
# and the sampling these steer. C15 is judged at 8 epochs, the largest budget at which neither model fits
# all of its 2,000 training images (at 20 epochs both reach 100.00%). "Fits a little better" did not show
# at any budget: at 8 epochs the deformable CNN's training accuracy was 2.10 points *below* the regular
# one's, with a 95% interval from −6.25 to +2.05 that three seeds cannot narrow to a sign (the
# assignment's +1.04 lies inside it too), and at 3 epochs the two were level. "Tests about the same"
# within the declared margin of one point is not settled either: +1.23 points on the distorted test
# images, interval −1.19 to +3.66, which reaches past the margin; at 20 epochs the gain was +2.13 (+0.30
# to +3.96), already mostly outside it. The clear gain at 8 epochs is on the most strongly distorted test
# images: +3.47 points, with an interval (+2.84 to +4.09) well clear of zero. (It is not a declared test:
# one of four test sets, picked after the runs.) That is not the assignment's single run (slightly better
# fit, the same test accuracy). Section 4 shows that the trained grids do not follow each image's zoom or
# angle, so this gain does not come from undoing each image's pose. It may come from the seed-specific
# reshaping of the receptive field, from the 5,382 extra parameters (11% more), or from the bilinear
# sampling itself; these runs do not separate them. The price is the time: the deformable CNN's fastest
# epoch took 4.8 times as long as the regular one's (4.5 to 5.7 times seed by seed; +2.15 s per epoch,
# interval +1.52 to +2.78), so "at
# a higher run time" is supported. With one part supported and two inconclusive, the claim as a whole
# comes out **inconclusive** here, as it does at 3 and at 20 epochs (the lines "C15 at ... epochs"
# printed below).
#
# **The offsets.** The trained layers do not undo each image's distortion. Across the 2,000 distorted test
# images, the scale and angle of each layer's fitted grid correlate with the image's true zoom and angle
# by $|r| < 0.1$ in every seed and layer, with signs that change from seed to seed (except block 1's scale,
# slightly negative in all three seeds, r −0.06 to −0.07). What they learn is an
# average reshaping of the receptive field, different in each seed (block 2 draws its grid to 34%-72% of
# the regular spread and turns it by −15 to +22 degrees on average), that varies from image to image
# without following the image's distortion, plus local changes from position to position, which the 81
# points of the figure show as an uneven, partly shifted cloud.
#
# **The pair classifier.** The unchanged pairs are the easiest (two identical channels are easy to
# recognise). Pairs with one change were recognised better than pairs with two on average, by 10.33
# points for the regular model (18.6 in the assignment's confusion matrix), but the gap varied so much
# from seed to seed that its 95% interval runs from −9.12 to +29.79 points: three seeds do not settle it.
# The confusions sit where the geometry says they should. A displacement on top of a rotation or a
# scaling is often missed: the turned or magnified copy has already moved most pixels by more than the
# 2-4 pixels of the displacement. That is why rotation and displacement + rotation are mistaken for each
# other in both directions (203 and 195 of the regular model's test pairs, summed over seeds) and have
# the lowest mean accuracies here (64.33% and 64.67%), not rotation + scaling as in the assignment.
# Rotation + scaling stands apart because its total magnification (1.4-1.9) is larger than any other
# label's; a plain rotation, magnified 1.22-1.37 by its crop, lies inside the range of the scaling
# change (1.15-1.4) and is sometimes taken for one. Rotation + scaling is in fact recognised better than
# displacement + scaling (by 21.8 points) and than displacement + rotation (by 27.4), both intervals
# entirely above zero: the "hardest" part of C16 goes the other way here, and with it the claim, which
# stays **contradicted**. How the assignment implemented its crop and chose its ranges decides which
# label is hardest; it also moves the one-versus-two gap, since plain rotation (one change) is one of the
# two hardest labels here.
#
# Deformable convolutions in the last stage help, and not by their size (at about twice the time per
# epoch: fastest epochs 3.0–3.2 s against 1.5–1.6 s in the run lines): +4.67 test points over the
# regular classifier (interval +1.13 to +8.20) and +4.10 over the wider regular one with as many
# parameters (+2.75 to +5.44), whose own gain over the regular one was small (84.17% against 83.60% test
# accuracy). The largest mean gain per label is on plain rotations (64.33% to 83.67%), then on
# displacement + scaling (70.33% to 79.44%); only the latter's interval excludes zero (rotation +19.33,
# interval −0.81 to +39.48; displacement + scaling +9.11, +6.58 to +11.64; printed in section 5). One
# reading, which these runs do not test, is that a 3x3 kernel on the 7x7 map covers most of the image
# and offsets let it follow a turned contour. (The classifiers' "train acc" is the running
# accuracy during the last epoch, in training mode, which is why it can sit below the validation
# accuracy, as for the regular model: 82.55% against 83.30%.)

# %%
# The tests below are declared from the claims' words (shared/CLAIMS.md), not from our numbers.
# Both arms of every comparison ran with the same seeds (run_grid, same seed list: same data, subset and batch
# order, and for regular vs deformable the same initial weights in every shared layer, checked in section 3), or
# come from the very same runs: all comparisons are paired by seed.
# The budgets count full batches only (`train` drops the last incomplete one; every training set here has more
# images than a batch).

# C15 has three parts. "Fits training data a little better": train accuracy, deformable − regular, greater.
# "Tests about the same": accuracy on test images distorted like the training images (the assignment's test
# set followed its training data), equivalent within ±1 point: the assignment calls a +1.04-point train gain
# "a little better", so a gap of a point is no longer "the same" (1 point is also 20 of the 2,000 test images
# of the cpu profile). "At a higher run time": the fastest epoch of each run, greater. The assignment timed
# whole runs on its own GPU (10:04 vs 9:16), not seconds per epoch on our machine, so its effect is not on our
# scale: it is kept as a ratio in `extra`, beside ours. Judged at JUDGED (section 3: the largest budget at which
# neither model fits all its training images, a rule written after the cpu runs had shown that 20 epochs
# saturate). So the same three tests are also run at every budget, printed and kept in `extra`
# ("verdict_by_budget"), with every budget's differences and how the learned grids relate to each image's
# distortion (section 4).
def c15_tests(runs):
    """C15's three declared tests on the runs of one budget (rows whose variant is regular or deformable)."""
    arms = lambda col, scale=1: [Arm.from_rows(runs, m, col, scale=scale) for m in ("deformable", "regular")]
    return [Comparison(*arms("train acc", 100), "greater", paired=True, source_effect=1.04,
                       label="deformable − regular, train acc", metric="training accuracy (points)"),
            Comparison(*arms("distorted acc", 100), "equivalent", margin=1.0, paired=True, source_effect=0.0,
                       label="deformable − regular, distorted test acc", metric="test accuracy, strength 1 (points)"),
            Comparison(*arms("fastest_epoch_seconds"), "greater", paired=True, label="deformable − regular, fastest epoch",
                       metric="seconds per epoch (fastest epoch of each run)")]


verdict_by_budget = []
for epochs in BUDGETS:
    tests = c15_tests(cnn_runs[cnn_runs["epochs"] == epochs].assign(variant=cnn_runs["model"]))
    verdict = combine([c.verdict for c in tests])  # as Claim.verdict combines them
    print(f"C15 at {epochs} epochs: " + "; ".join(f"{c.label.split(', ')[1]} {format_difference(c.diff, c.ci95)} "
                                                  f"({c.verdict})" for c in tests) + f" -> {verdict}")
    verdict_by_budget.append({"epochs": epochs, "verdict": verdict, "comparisons": [
        {"label": c.label, "diff": float(c.diff), "ci95": None if c.ci95 is None else [float(v) for v in c.ci95],
         "verdict": c.verdict} for c in tests]})

fit_block2 = fit_table[fit_table["layer"] == "block2"]
c15 = Claim(
    "C15", "A deformable CNN fits training data a little better and tests about the same, at a higher run time",
    source=("deformable − regular: train +1.04 (90.03 vs 88.99), test 0.00 (72 vs 72) accuracy points; "
            "run time 10:04 vs 9:16 min (1.09x); one run each (seed 002 Q2)"),
    budget=Budget.of_epochs(len(cnn_train[1]), cfg["batch"], JUDGED), section="sec-c15",
    comparisons=c15_tests(judged),
    note=(f"Measured at {len(BUDGETS)} budgets ({', '.join(map(str, BUDGETS))} epochs on {len(cnn_train[1]):,} "
          f"distorted training images, separate runs) and judged at {JUDGED} epochs, the largest at which "
          "neither model fits all its training images (at 100% a difference in fitting cannot show). This rule "
          "was fixed after the course's cpu runs had shown that both models reach 100% at 20 epochs; the verdict "
          "at each budget: " + ", ".join(f"{v['epochs']} epochs {v['verdict']}" for v in verdict_by_budget) +
          " (verdict_by_budget in extra). The regular and deformable runs of a seed share data, batch order and "
          "initial weights. Training accuracy is measured in evaluation mode after training. Clean and strongly "
          "distorted test sets are in section 3, not judged; whether the learned grids follow each image's zoom "
          f"and angle is in section 4 (the {max(BUDGETS)}-epoch models; correlations in extra)."),
    extra={"time ratio, fastest epochs (deformable / regular)": float(time_ratio),
           "source time ratio (whole runs)": round(604 / 556, 3),
           "verdict_by_budget": verdict_by_budget,
           "by budget: means and deformable − regular with 95% interval (accuracy in points, loss in nats)": [
               {"epochs": int(r["epochs"]), "metric": r["metric"], "regular": float(r["regular"]),
                "deformable": float(r["deformable"]), "diff": float(r["diff"]),
                "ci95": None if r["ci95"] is None else [float(v) for v in r["ci95"]]}
               for r in budget_rows],
           f"block 2 grid vs true distortion ({max(BUDGETS)}-epoch models), Pearson r and 95% interval over test images": [
               {"seed": int(r["seed"]), "quantity": r["quantity"], "r": float(r["r"]),
                "ci95": [float(v) for v in r["ci95"]], "slope": float(r["slope"])}
               for r in fit_block2.to_dict("records")]})

# C16 has two parts. "One change is classified better than two": test accuracy on the pairs with one change
# minus that on the pairs with two, greater. "Rotation+scaling is hardest": its accuracy lies below that of
# every other label, so one "less" comparison against each of the six others (all six must be supported).
# The regular classifier, as in the assignment. The source's effects come from its test confusion matrix:
SOURCE_CM = np.array([[495, 0, 0, 0, 0, 0, 0], [0, 447, 0, 0, 3, 29, 1], [3, 2, 394, 24, 11, 17, 24],
                      [0, 5, 0, 468, 0, 6, 0], [1, 1, 4, 0, 360, 105, 4], [0, 19, 0, 2, 4, 427, 0],
                      [1, 2, 69, 40, 32, 105, 247]])  # seed 002 Q3, rows the true label
src_label = dict(zip(PAIR_LABELS, np.diag(SOURCE_CM) / SOURCE_CM.sum(1) * 100))
by_changes = {n: [k for k in range(7) if PAIR_CHANGES[k] == n] for n in (1, 2)}
src_changes = {n: np.diag(SOURCE_CM)[k].sum() / SOURCE_CM[k].sum() * 100 for n, k in by_changes.items()}
src_one_two = float(src_changes[1] - src_changes[2])
label_arms = {label: Arm.from_rows(pair_runs, "regular", f"acc {label}", label=label, scale=100)
              for label in PAIR_LABELS}
others = [label for label in PAIR_LABELS if label != "rotation+scaling"]
c16 = Claim(
    "C16", "Pairs with one change are classified better than pairs with two; rotation+scaling is hardest",
    source=(f"one − two changes = {src_one_two:+.1f} test points ({src_changes[1]:.1f} vs {src_changes[2]:.1f}); "
            f"rotation+scaling {src_label['rotation+scaling']:.1f}% vs {min(src_label[l] for l in others):.1f}-100% "
            f"for the other labels; confusion matrix of {SOURCE_CM.sum():,} test pairs, one run (seed 002 Q3)"),
    budget=Budget.of_epochs(len(pair_train[1]), cfg["batch"], cfg["pair"]["epochs"]), section="sec-c16",
    comparisons=[
        Comparison(Arm.from_rows(pair_runs, "regular", "acc 1 changes", label="one change", scale=100),
                   Arm.from_rows(pair_runs, "regular", "acc 2 changes", label="two changes", scale=100), "greater",
                   paired=True, source_effect=src_one_two, metric="test accuracy (points)"),
        *[Comparison(label_arms["rotation+scaling"], label_arms[label], "less", paired=True,
                     source_effect=float(src_label["rotation+scaling"] - src_label[label]),
                     metric="test accuracy (points)") for label in others],
    ],
    note=("Rotation here always comes with the crop's magnification (1.22-1.37), so the rotation and scaling "
          "labels overlap; how the crop and the ranges are chosen decides which label is hardest."),
    extra={"label with the lowest mean accuracy": hardest["regular"]})
save_claims("03", [c15, c16])
viz.forest_plot(forest_rows([c16]), xlabel="a − b, test accuracy (points)",
                title="C16, regular pair classifier: ours (95% interval) and the assignment's (×)");

# %% [markdown]
# ## Exercises
#
# 1. **Bilinear by hand.** For the 2x3 image of section 2, what does a deformable kernel point read at
#    (0.25, 0.5)? And at (-1.0, 1.0)? Check with `bilinear_sample`.
# 2. **Count offset parameters.** How many parameters does the offset convolution of a 3x3
#    `DeformConv2d(64, 128, 3)` have, without and with modulation? What fraction of the layer is that?
# 3. **Why start at zero?** What would a random initialisation of the offset convolution do to a
#    network at the start of training? Try it on a batch: compare the outputs of a `DeformConv2d` with
#    zero and with random (std 0.5) offset weights against the regular convolution.
# 4. **The 1x1 shortcut with padding 1.** Build a 1x1 convolution 32 -> 64 with stride 2 and padding 1
#    and apply it to a 32x14x14 map. What goes wrong in the residual sum?
# 5. **DCNv2.** Train `TwoBlockCNN(deformable=True, modulated=True)` in the grid of section 3 (add a
#    variant). Does the modulation change accuracy or time?

# %% tags=["solution", "hide-input"]
# Solutions 1-4, checked with the course's code.
print("1.", bilinear_sample(img, torch.tensor([[[0.25, -1.0]]]), torch.tensor([[[0.5, 1.0]]])).flatten().tolist())
for modulated in (False, True):
    layer = DeformConv2d(64, 128, 3, modulated=modulated)
    n_off = count_parameters(layer.offset_conv)
    n_all = count_parameters(layer)
    print(f"2. modulated={modulated}: offset conv {n_off:,} of {n_all:,} parameters ({n_off / n_all:.0%})")
course_utils.runtime.seed_everything(0)
layer = DeformConv2d(8, 8, 3, padding=1)
conv = nn.Conv2d(8, 8, 3, padding=1)
conv.load_state_dict({"weight": layer.weight.data, "bias": layer.bias.data})
xs = torch.randn(4, 8, 14, 14)
with torch.no_grad():
    print("3. zero offsets: max |deformable - regular| =", f"{(layer(xs) - conv(xs)).abs().max():.1e}")
    nn.init.normal_(layer.offset_conv.weight, std=0.5)
    print("   random offsets: max |deformable - regular| =", f"{(layer(xs) - conv(xs)).abs().max():.1f}",
          "| mean offset length", f"{layer.offsets(xs)[0].reshape(4, 9, 2, 14, 14).norm(dim=2).mean():.1f} pixels")
shortcut = nn.Conv2d(32, 64, 1, stride=2, padding=1)
print("4. 1x1 conv with padding 1:", tuple(shortcut(torch.zeros(1, 32, 14, 14)).shape), "vs the block's (1, 64, 7, 7)")

# %% [markdown] tags=["solution"]
# ```{admonition} Solutions
# :class: dropdown
# **1.** (0.25, 0.5): rows 0 and 1 with weights 0.75 and 0.25, columns 0 and 1 with 0.5 each:
# $0.75 \cdot 5 + 0.25 \cdot 35 = 12.5$. (-1.0, 1.0) is a full pixel above the image: every neighbour
# with non-zero weight is outside, so it reads 0.
#
# **2.** $18 \times 64 \times 9 + 18 = 10{,}386$ without modulation and $27 \times 64 \times 9 + 27 =
# 15{,}579$ with it, against $128 \times 64 \times 9 + 128 = 73{,}856$ for the convolution itself:
# about an eighth and a sixth of the layer.
#
# **3.** With random offset weights the points scatter by several pixels from the start: the layer
# computes something quite different from a convolution, the features of a pretrained or freshly
# initialised network no longer line up, and the first gradient steps go into repairing that. Zero
# offsets make the deformable network start as the regular one, and let the data decide where to
# move the points.
#
# **4.** The output is 8x8 instead of 7x7: padding adds a ring of zeros, and with stride 2 the ring
# adds one output row and column; the sum with the 7x7 block output fails with a shape error (the
# extra first row and column carry only zeros and the bias, and the other positions sit on odd pixels,
# one pixel off the block's even-pixel grid, so cropping would not fix it either).
#
# **5.** Add `f"deformable (DCNv2), {epochs} ep": {"deformable": True, "modulated": True, ...}` to the
# configs (for one budget or each) and pass `modulated=config.get("modulated", False)` to `TwoBlockCNN`
# in `run_cnn`. `run_cnn` already saves
# the weights for section 4 only for the plain deformable variant (`not config.get("modulated")`);
# without that guard the DCNv2 run would overwrite them, and section 4 would fail to load its 27-channel
# offset convolutions into a plain model. The modulation
# adds nine channels to each offset convolution and one multiplication per sample, so expect the time
# per epoch to rise a little (measure it: `fastest_epoch_seconds`); its masks start at 0.5, which the
# batch norm after each convolution absorbs. Judge the accuracy change by the paired 95% interval of the
# difference (`Arm.minus`), not by Δ alone.
# ```
