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
# # 5. Self-supervised pre-training with BYOL
#
# Labels are expensive; images are not. *Self-supervised* learning trains a backbone on images
# alone, with a task built from the images themselves, and hands the backbone to a *downstream* task
# that has only a few labels. This chapter builds one such method, BYOL (*Bootstrap Your Own Latent*,
# {cite}`grill2020byol`), from its equations, watches it learn without ever seeing a label, and then
# asks the practical question: is a BYOL backbone worth having, compared with no pre-training and
# with a backbone pre-trained on labels?
#
# **Objectives.** After this chapter you can
# - say what self-supervised pre-training buys and what a "view" of an image is;
# - write BYOL's loss and its moving-average target, and explain why it does not collapse although it
#   uses no negative examples;
# - watch a run without labels through kNN accuracy and a collapse check;
# - compare five ways of using a backbone downstream (trained from scratch, fine-tuned, frozen) fairly,
#   over seeds, and see how the answer depends on the number of labels;
# - look at representations with PCA and t-SNE and say what each picture can and cannot show.
#
# The experiments follow a course assignment that pre-trained a ResNet-50 with BYOL on Mini-ImageNet
# without labels and fine-tuned it on Office-Home, whose 65 classes it had never seen. Offline, the
# course does the same with Fashion-MNIST: BYOL sees the images of five classes without their labels;
# the downstream task is to classify the **other five** classes from few labelled images.

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
import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch.nn.functional as F

import course_utils
from course_utils import data, experiments, metrics, viz
from course_utils.budget import estimate_line
from course_utils.claims import Arm, Budget, Claim, Comparison, forest_rows, save_claims
from course_utils.intervals import format_difference
from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip, TwoViews, byol_augment
from course_utils.features import KNNProbe, knn_accuracy, linear_probe, pooled_features, predict, recalibrate_batchnorm
from course_utils.io import atomic_write_text
from course_utils.models.byol import BYOL
from course_utils.models.resnet import resnet6n2
from course_utils.summary import count_parameters
from course_utils.losses import byol_loss
from course_utils.models.byol import byol_tau
from course_utils.pretrain import checkpoint_path, pretrained_backbone
from course_utils.recipes import train_byol, train_classifier

viz.book_style()
rt = course_utils.setup(seed=0)

# %% [markdown]
# ## Configuration
#
# `arch`: the backbone, a ResNet(6n+2) of Chapter 1 (n = 1 is a ResNet-8); `pre_per_class`: images
# per pre-training class; `byol`: the self-supervised run; `sup`: the supervised pre-training of the
# same backbone on the same images *with* labels; `labels`: labelled images per downstream class,
# each with the epochs of a fine-tuning run (`ft`: its learning rate and batch size); `pool_per_class`:
# the downstream images the labelled subsets are drawn from; `ablation`: the short run of exercise 3.

# %%
cfg = course_utils.by_profile(
    smoke=dict(arch=dict(n=1, widths=(16, 32, 64)), pre_per_class=60,
               byol=dict(epochs=1, batch_size=64, lr=4e-3, base_tau=0.97), sup=dict(epochs=1, lr=0.2),
               probe_per_class=20, test_per_class=40, labels={10: 2, 20: 1}, pool_per_class=40, seeds=[0],
               ft=dict(lr=0.05, batch_size=32), vis_per_class=30, ablation=dict(per_class=40, epochs=1, batch_size=64)),
    cpu=dict(arch=dict(n=1, widths=(16, 32, 64)), pre_per_class=1200,
             byol=dict(epochs=16, batch_size=256, lr=4e-3, base_tau=0.97), sup=dict(epochs=4, lr=0.2),
             probe_per_class=200, test_per_class=400, labels={10: 40, 100: 10, 500: 3}, pool_per_class=1000,
             seeds=[0, 1, 2], ft=dict(lr=0.05, batch_size=32), vis_per_class=200,
             ablation=dict(per_class=400, epochs=3, batch_size=128)),
    gpu=dict(arch=dict(n=3, widths=(32, 64, 128)), pre_per_class=6000,
             byol=dict(epochs=100, batch_size=512, lr=4e-3, base_tau=0.99), sup=dict(epochs=30, lr=0.2),
             probe_per_class=1000, test_per_class=1000, labels={10: 100, 100: 30, 1000: 10, 3000: 5},
             pool_per_class=6000, seeds=[0, 1, 2, 3, 4], ft=dict(lr=0.05, batch_size=32), vis_per_class=300,
             ablation=dict(per_class=1000, epochs=10, batch_size=256)),
)
AUG = dict(crop_scale=(0.08, 1.0), jitter=0.4, p_jitter=0.8, p_flip=0.5, p_blur=0.5)  # the same in every profile
print(estimate_line("05"))
cfg

# %% [markdown]
# ## 1. Why self-supervision
#
# Chapter 4 reused a backbone trained *with labels* on other classes. Often there are no such labels:
# a hospital has millions of scans and a few hundred diagnoses, a factory camera records all day and
# someone marks a handful of defects. Self-supervised learning turns the unlabelled images into a
# training signal. The family BYOL belongs to builds it from **views**: two random augmentations of
# one image (a crop, a flip, a change of brightness, a blur) should have similar representations,
# because they show the same thing. What the augmentations change is what the representation learns
# to ignore; what they keep is what it must encode.
#
# "Similar representations for two views" alone has a trivial solution: map every image to the same
# vector. Contrastive methods (SimCLR, MoCo) prevent it with **negatives**: the views of *other*
# images must be far apart, which needs large batches or a memory of past embeddings. BYOL needs no
# negatives at all, which is why it is worth understanding.
#
# ## 2. BYOL
#
# Two networks look at the two views $v$ and $v'$ of an image:
#
# - the **online** network, with weights $\theta$: a backbone $f_\theta$ (our ResNet), a projector
#   $g_\theta$ (an MLP) and a **predictor** $q_\theta$ (another MLP), giving
#   $q_\theta(z_\theta)$ with $z_\theta = g_\theta(f_\theta(v))$;
# - the **target** network, with weights $\xi$: a backbone and a projector of the same shape, but no
#   predictor, giving $z'_\xi = g_\xi(f_\xi(v'))$.
#
# The online network predicts the target's projection of the *other* view. With both vectors
# normalised to unit length, $\bar a = a / \lVert a \rVert_2$, the loss is their squared distance,
#
# $$ \mathcal{L}_{\theta,\xi} = \big\lVert \overline{q_\theta(z_\theta)} - \bar z'_\xi \big\rVert_2^2
#    = 2 - 2\,\frac{\langle q_\theta(z_\theta),\, z'_\xi \rangle}{\lVert q_\theta(z_\theta)\rVert_2\,\lVert z'_\xi\rVert_2}, $$
#
# and it is made symmetric by swapping the views, $\mathcal{L}^{\text{BYOL}} = \mathcal{L}_{\theta,\xi} +
# \tilde{\mathcal{L}}_{\theta,\xi}$, so it lies between 0 (the views agree) and 8. Only $\theta$ is trained by
# gradient descent. The target receives **no gradient**; after each step its weights move a little
# towards the online ones, an exponential moving average (EMA):
#
# $$ \theta \leftarrow \operatorname{optimizer}\big(\theta, \nabla_\theta \mathcal{L}^{\text{BYOL}}\big), \qquad
#    \xi \leftarrow \tau\, \xi + (1 - \tau)\, \theta . $$
#
# The rate $\tau$ starts at $\tau_{\text{base}}$ and rises to 1 along a cosine over the $K$ training
# steps, $\tau_k = 1 - (1 - \tau_{\text{base}})\,(\cos(\pi k / K) + 1)/2$, so the target changes fast early
# and freezes at the end. The paper uses $\tau_{\text{base}} = 0.996$ for runs of hundreds of thousands
# of steps; our CPU run has a few hundred, so the target must move faster: 0.97 (the target then
# averages over roughly the last $1/(1-\tau) \approx 33$ steps at the start). After pre-training, only the online
# backbone $f_\theta$ is kept.
#
# `course_utils.models.byol.BYOL` holds both networks (`tests/models/test_byol.py` checks that no gradient reaches
# the target, that an optimiser step leaves it unchanged, and the EMA arithmetic). The loss on fixed
# vectors, against the formula:

# %%
# NBVAL_CHECK_OUTPUT
p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
by_hand = 2 - 2 * F.cosine_similarity(p, z, dim=1)
print("2 - 2 cos per row:", [round(v, 4) for v in by_hand.tolist()])
print(f"byol_loss: {byol_loss(p, z):.4f} | mean of the rows: {by_hand.mean():.4f} | "
      f"squared distance of the unit vectors: {(F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean():.4f}")

# %% [markdown]
# Row one points the same way as its target (the length does not matter): loss 0. Row two is at 45°:
# $2 - 2\cos 45° = 2 - \sqrt 2 \approx 0.586$. Row three points the opposite way: 4, the maximum.
#
# The EMA on a toy model: set every online weight to 1 and every target weight to 0, then update with
# $\tau = 0.9$. After one step each target weight is $0.1$; after ten, $1 - 0.9^{10} \approx 0.651$.
# The target is a slowly moving average of the online network's recent past.

# %%
# NBVAL_CHECK_OUTPUT
toy = BYOL(resnet6n2(1, 2, norm="torch_bn", widths=(2, 2, 2)), projector_dim=2, hidden_dim=4)
with torch.no_grad():
    for w in toy.online_parameters():
        w.fill_(1.0)
    for w in toy.target_parameters():
        w.fill_(0.0)
history = []
for step in range(10):
    toy.update_target(0.9)
    history.append(next(toy.target_parameters()).flatten()[0].item())
print("a target weight after 1, 2, 3, 10 updates:", [round(history[i], 4) for i in (0, 1, 2, 9)])
print(f"1 - 0.9**10 = {1 - 0.9 ** 10:.4f}")
print("every target weight equal:", all(torch.allclose(w, torch.full_like(w, history[-1])) for w in toy.target_parameters()))
print("tau over 100 steps (base 0.99), steps 0, 25, 50, 75, 100:",
      [round(byol_tau(k, 100, 0.99), 5) for k in (0, 25, 50, 75, 100)])

# %% [markdown]
# ### Why does BYOL not collapse?
#
# Mapping every image to one constant vector makes the loss zero, so a collapsed network *is* a
# minimum of $\mathcal{L}^{\text{BYOL}}$. BYOL avoids it not through its objective but through its dynamics,
# and two pieces matter:
#
# 1. **The target is not trained by the loss.** If gradients flowed into both branches, the fastest
#    way down would move both outputs towards each other, and towards a constant. With the stop-gradient
#    the online network can only chase a target that it does not control, and the EMA makes that
#    target a smoothed, slightly older copy of itself.
# 2. **The predictor.** Suppose $q_\theta$ were the best possible predictor, $q^\star(z_\theta) =
#    \mathbb{E}[z'_\xi \mid z_\theta]$. Then the loss the backbone sees is the *conditional variance* of the
#    target projection given the online one, $\mathbb{E}\big[\operatorname{Var}(z'_\xi \mid z_\theta)\big]$ (BYOL,
#    section 3.2). Conditioning on *more* information never increases the expected variance,
#    $\mathbb{E}\big[\operatorname{Var}(X \mid Y, Z)\big] \le \mathbb{E}\big[\operatorname{Var}(X \mid Y)\big]$, so discarding information from $z_\theta$ can only
#    make the loss worse: a constant $z_\theta$ is the *worst* input for an optimal predictor, not the
#    best. Gradient descent keeps the online representation informative, and the EMA passes that on
#    to the target.
#
# This is an argument, not a proof (the predictor is never optimal, and batch norm in the MLPs plays
# a part too); experiments in the paper and in SimSiam {cite}`chen2021simsiam` show that removing the
# predictor does make the representation collapse. Exercise 3 lets you watch it. We watch for
# collapse with the **standard deviation of the normalised embeddings** (SimSiam, section 4.1): for
# $d$-dimensional unit vectors spread over the sphere each coordinate has a std of about
# $1/\sqrt d$; at a collapse all vectors coincide and the std is 0.
#
# ## 3. Views of grey-scale images
#
# The assignment used the augmentations of SimCLR and BYOL with its own probabilities: colour jitter
# of strength 0.8 (applied with probability 0.3), random grey-scale (0.2), horizontal flip (0.5), a
# 3x3 Gaussian blur with $\sigma \in [1, 2]$ (0.2), and a random resized crop of 8-100% of the area
# with aspect ratios from 3/4 to 4/3. On one-channel images, colour jitter leaves brightness and
# contrast (there is no saturation or hue) and grey-scale does nothing. `course_utils.augment`
# implements them as batched tensor operations (brightness, contrast and blur are tested against
# torchvision). We keep the assignment's crop, flip and blur size, and take the jitter of the BYOL
# paper (brightness and contrast 0.4, with probability 0.8) and a blur probability of 0.5 (BYOL blurs
# one view always and the other one rarely); exercise 5 compares with the assignment's values. Two
# views of eight pre-training images:

# %%
# NBVAL_CHECK_OUTPUT
x_all, y_all = data.load_fashion_mnist("train")
x_test_all, y_test_all = data.load_fashion_mnist("test")
PRE, DOWN = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
print("pre-training classes (labels never used for training):", ", ".join(data.FASHION_CLASSES[c] for c in PRE))
print("downstream classes:", ", ".join(data.FASHION_CLASSES[c] for c in DOWN))
TWO_VIEWS = TwoViews(byol_augment(**AUG))
batch = x_all[:8].float() / 255
views = TWO_VIEWS(batch, torch.Generator().manual_seed(0))
print(f"images {tuple(batch.shape)} -> two views {tuple(views.shape)}, values in "
      f"[{views.min():.2f}, {views.max():.2f}], same seed same views: "
      f"{torch.equal(views, TWO_VIEWS(batch, torch.Generator().manual_seed(0)))}")

# %%
viz.show_images(torch.cat([batch, views[:, :1], views[:, 1:]]), ["image"] * 8 + ["view 1"] * 8 + ["view 2"] * 8,
                ncols=8, size=1.0);

# %% [markdown]
# ## 4. The data
#
# Pre-training uses `pre_per_class` training images of each of the five pre-training classes: BYOL
# sees them without labels, the supervised backbone of settings B and D with labels. To *watch* BYOL,
# the kNN probe classifies test images of the same classes by a vote of labelled pre-training images;
# those labels are read only for this, never trained on. The downstream
# task has its own pool of training images (the labelled subsets are drawn from it, a new subset for
# every seed) and a fixed, balanced test set from the official test images.

# %%
NORMALIZE = dict(mean=data.FASHION_MEAN, std=data.FASHION_STD)
# class_subset keeps the listed classes only, relabelled 0..4 in the order given, per_class of each
x_pre, y_pre = data.class_subset(x_all, y_all, PRE, cfg["pre_per_class"], seed=0)
bank_idx = data.stratified_subset(y_pre, cfg["probe_per_class"], seed=1)
x_bank, y_bank = x_pre[bank_idx], y_pre[bank_idx]  # labelled neighbours: pre-training images with their labels
x_query, y_query = data.class_subset(x_test_all, y_test_all, PRE, cfg["probe_per_class"], seed=0)  # the queries: test images
x_pool, y_pool = data.class_subset(x_all, y_all, DOWN, cfg["pool_per_class"], seed=0)
x_test, y_test = data.class_subset(x_test_all, y_test_all, DOWN, cfg["test_per_class"], seed=0)
print(f"pre-training: {len(x_pre)} images | probe: {len(x_bank)} labelled + {len(x_query)} queries | "
      f"downstream pool: {len(x_pool)} | downstream test: {len(x_test)}")

# %% [markdown]
# ## 5. Pre-training with BYOL
#
# The backbone is a ResNet-8 (Chapter 1's family with n = 1), the same architecture for every
# setting. The projector (64 → 512 → 128) and the predictor (128 → 512 → 128) are MLPs with batch norm,
# as in the paper at a smaller size. Both views of a batch go through each network together. AdamW with a short warm-up
# and a cosine decay replaces the paper's LARS, which needs batches of thousands of images.
# `pretrained_backbone` keeps the result on disk, keyed by the configuration, and `train_byol` (the
# BYOL recipe of `course_utils.recipes`: the course's loop `fit` with BYOL's step and the EMA update
# as an after-step hook) writes a checkpoint after every epoch, so an interrupted run resumes where it stopped.

# %%
# NBVAL_CHECK_OUTPUT
def build_backbone(seed=0):
    """A fresh ResNet initialised from ``seed``: every pre-training starts from the same weights."""
    torch.manual_seed(seed)
    return resnet6n2(cfg["arch"]["n"], 5, norm="torch_bn", widths=cfg["arch"]["widths"])


def build_byol(predictor=True):
    """Online and target networks around a fresh backbone (``predictor=False``: exercise 3's ablation)."""
    return BYOL(build_backbone(), projector_dim=128, hidden_dim=512, predictor=predictor)


demo = BYOL(resnet6n2(1, 5, norm="torch_bn"), projector_dim=128, hidden_dim=512)
print(f"ResNet-8 backbone (without its 5-class layer): {count_parameters(demo.backbone) - count_parameters(demo.backbone.fc):,} parameters")
print(f"projector 64 -> 512 -> 128: {count_parameters(demo.projector):,} | predictor 128 -> 512 -> 128: {count_parameters(demo.predictor):,}")
print(f"trained by gradients (without the unused 5-class layer): "
      f"{sum(p.numel() for p in demo.online_parameters()) - count_parameters(demo.backbone.fc):,} | "
      f"target (EMA only): {sum(p.numel() for p in demo.target_parameters()) - count_parameters(demo.target_backbone.fc):,} | "
      f"target requires grad: {any(p.requires_grad for p in demo.target_parameters())}")

# %%
RUNS = experiments.runs_dir("ch05")
probe = KNNProbe(x_bank, y_bank, x_query, y_query, k=20, **NORMALIZE)  # kNN accuracy + collapse check per epoch
byol_cfg = dict(arch=cfg["arch"], per_class=cfg["pre_per_class"], augment=AUG, seed=0, **cfg["byol"])
history_file = checkpoint_path(RUNS, byol_cfg, "byol-history").with_suffix(".json")


def pretrain(model):
    """BYOL on the pre-training images, labels unused; the per-epoch history is kept beside the weights."""
    course_utils.runtime.seed_everything(0)
    history = train_byol(model, x_pre, augment=byol_augment(**AUG), seed=0, probe=probe, **cfg["byol"], **NORMALIZE,
                         checkpoint=checkpoint_path(RUNS, byol_cfg, "byol-run"))  # resumable, keyed by config
    atomic_write_text(history_file, json.dumps(history.records))


byol_model, cached, path = pretrained_backbone(build_byol, pretrain, byol_cfg, RUNS, name="byol-resnet8")
byol_history = pd.DataFrame(json.loads(history_file.read_text())).set_index("epoch")
print("BYOL model", "loaded from" if cached else "trained and saved to", path.name)
byol_backbone = byol_model.backbone

# %% [markdown]
# For comparison, the same backbone trained **with** the labels of the same images (cross-entropy,
# the recipe of Chapter 1), and an untrained one with the same initialisation seed.

# %%
sup_cfg = dict(arch=cfg["arch"], per_class=cfg["pre_per_class"], seed=0, batch_size=128, **cfg["sup"])


def train_supervised(model):
    course_utils.runtime.seed_everything(0)
    train_classifier(model, (x_pre, y_pre), None, epochs=sup_cfg["epochs"], batch_size=128, lr=sup_cfg["lr"],
                     label_smoothing=0.1, augment=Compose([RandomCrop(2), RandomHorizontalFlip()]), **NORMALIZE)


sup_backbone, cached, path = pretrained_backbone(build_backbone, train_supervised, sup_cfg, RUNS, name="sup-resnet8")
print("supervised backbone", "loaded from" if cached else "trained and saved to", path.name)
random_backbone = build_backbone()  # the weights BYOL and the supervised run started from
sup_knn = knn_accuracy(pooled_features(sup_backbone, x_bank, **NORMALIZE), y_bank,
                       pooled_features(sup_backbone, x_query, **NORMALIZE), y_query, k=20)
print(f"kNN accuracy (k=20) on the pre-training classes: random init {byol_history['knn_acc'].iloc[0]:.3f}, "
      f"BYOL {byol_history['knn_acc'].iloc[-1]:.3f}, supervised {sup_knn:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
h = byol_history
axes[0].plot(h.index, h["train_loss"], "o-", ms=3)
axes[0].set(xlabel="epoch", ylabel="symmetric BYOL loss", title="loss (0 = views agree, max 8)")
axes[1].plot(h.index, h["knn_acc"], "o-", ms=3, label="BYOL backbone")
axes[1].axhline(sup_knn, color="C2", ls="--", label="supervised backbone")
axes[1].set(xlabel="epoch", ylabel="kNN accuracy", title="kNN (k=20) on the pre-training classes")
axes[2].plot(h.index, h["collapse_std"], "o-", ms=3, label="std of normalised z")
axes[2].axhline(1 / math.sqrt(128), color="gray", ls="--", label="1/sqrt(128): spread out")
axes[2].set(xlabel="epoch", ylabel="std", title="collapse check", ylim=(0, None))
for ax in axes:
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=7)
axes[2].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# Epoch 0 is the untrained network. The loss falls fast for a few epochs (two views of one image
# become easy to match once the network ignores brightness, blur and position) and then slowly, as
# the learning rate decays and the target freezes. The kNN accuracy rises although no label was
# used (the probe's labels only *read* the representation), but it stays well below the supervised
# backbone's: the labels of the five classes are exactly what the supervised backbone was trained
# to separate, while BYOL had to discover what distinguishes a T-shirt from a pullover by itself.
#
# The collapse check reads the other way round from what you might expect at epoch 0: the
# *untrained* projections are nearly collapsed already, since a random projector maps all images
# to similar directions. BYOL spreads them out within the first epoch and keeps them spread (well
# above 0, though below the $1/\sqrt{128}$ of perfectly isotropic embeddings, which real features
# never reach). A collapse would show as a fall towards 0 with a loss near 0: exercise 3.
#
# (sec-c19)=
# (sec-c20)=
# (sec-c21)=
# ## 6. Downstream: five ways to use a backbone
#
# The downstream task is to classify the five classes BYOL never saw (nor did the supervised
# backbone), with few labels. The settings of the assignment, plus a control:
#
# | setting | backbone | what is trained downstream |
# |---|---|---|
# | A | none (random initialisation) | the whole network |
# | B | supervised pre-training | the whole network (fine-tuning) |
# | C | BYOL pre-training | the whole network (fine-tuning) |
# | D | supervised pre-training, frozen | a linear classifier on its features |
# | E | BYOL pre-training, frozen | a linear classifier on its features |
# | R | random initialisation, frozen | a linear classifier on its features |
#
# Row R tells how much of a frozen backbone's score is owed to pre-training at all: a random
# convolutional network already gives features a linear classifier can use. A–C fine-tune with the
# course's recipe (SGD, one-cycle, random crops and flips, the same learning rate for all three). The
# frozen settings compute the 64 pooled features once and fit a logistic regression whose
# regularisation is chosen by cross-validation on the labelled images only.
#
# One detail matters for frozen backbones: batch norm's running statistics. BYOL estimated them on
# augmented views (crops, jitter, blur), not on the clean images the frozen backbone will see. Before
# any downstream use, every backbone, random ones included, gets them re-estimated on the clean,
# unlabelled pre-training images (`recalibrate_batchnorm`; the weights do not change). Every run is repeated
# with several seeds; a seed draws a new labelled subset (the same subset for every setting) and, for
# A-C, a new initialisation (A's whole network, B's and C's classifier layer); the logistic regression
# of D, E and R depends on the subset only. Two settings are therefore compared seed by seed (*paired*).

# %%
BACKBONES = {"supervised": sup_backbone, "BYOL": byol_backbone, "random": random_backbone}
for backbone in BACKBONES.values():
    recalibrate_batchnorm(backbone, x_pre, **NORMALIZE)
FEATURES = {name: (pooled_features(b, x_pool, **NORMALIZE), pooled_features(b, x_test, **NORMALIZE))
            for name, b in BACKBONES.items()}
SETTINGS = {"A scratch": (None, "fine-tune"), "B supervised, fine-tuned": ("supervised", "fine-tune"),
            "C BYOL, fine-tuned": ("BYOL", "fine-tune"), "D supervised, frozen": ("supervised", "frozen"),
            "E BYOL, frozen": ("BYOL", "frozen"), "R random, frozen": ("random", "frozen")}


def downstream(config, seed):
    source, mode = SETTINGS[config["setting"]]
    idx = data.stratified_subset(y_pool, config["labels"], seed=100 + seed)
    if mode == "frozen":
        f_pool, f_test = FEATURES[source]
        return {"test_acc": linear_probe(f_pool[idx], y_pool[idx], f_test, y_test)}
    model = build_backbone(seed)  # A starts from a new initialisation per seed
    course_utils.runtime.seed_everything(seed)
    if source is not None:
        model.load_state_dict({k: v for k, v in BACKBONES[source].state_dict().items() if not k.startswith("fc.")},
                              strict=False)
    n = len(idx)
    train_classifier(model, (x_pool[idx], y_pool[idx]), None, epochs=config["epochs"],
                     batch_size=min(cfg["ft"]["batch_size"], n // 2), lr=cfg["ft"]["lr"], seed=seed,
                     augment=Compose([RandomCrop(2), RandomHorizontalFlip()]),
                     progress=False, verbose=False, **NORMALIZE)
    logits = predict(model, x_test, **NORMALIZE)
    return {"test_acc": metrics.accuracy(logits, y_test)}


grid = {f"{s} @ {n}": dict(setting=s, labels=n, epochs=e, ft=cfg["ft"], test=cfg["test_per_class"])
        for n, e in cfg["labels"].items() for s in SETTINGS}
runs = experiments.run_grid(grid, cfg["seeds"], downstream, cache_dir=RUNS / "downstream", verbose=False)
runs["setting"] = runs["variant"].str.split(" @ ").str[0]
runs["labels"] = runs["variant"].str.split(" @ ").str[1].astype(int)

# %%
tables, summaries = {}, {}
for n in cfg["labels"]:
    part = runs[runs["labels"] == n].assign(variant=lambda d: d["setting"])
    summaries[n] = experiments.summarize(part, ["test_acc"], baseline="A scratch")
    shown = experiments.format_mean_std(summaries[n], ["test_acc"])
    tables[f"{n} labels/class"] = shown["test_acc"]  # the differences from A, with intervals: the figure below
acc_mean = pd.DataFrame({n: summaries[n]["test_acc_mean"] for n in cfg["labels"]}) * 100  # setting x labels/class, %
acc_std = pd.DataFrame({n: summaries[n]["test_acc_std"] for n in cfg["labels"]}) * 100  # NaN with one seed
table = pd.DataFrame(tables)
table.index.name = f"test accuracy %, mean ± std over {len(cfg['seeds'])} seeds"
table

# %% [markdown]
# Test accuracy in percent on the five downstream classes. What the table cannot show at a glance is
# which differences the seeds can vouch for. The figure below gives each setting's difference from
# training from scratch (A) with the same labels: the mean over seeds of the per-seed differences
# (each seed is one labelled subset, shared by every setting) and its 95% confidence interval, a t
# interval on those differences. An interval that does not contain 0 is a difference the seeds
# establish; one that contains 0 is not, whatever its mean. Beside them (black ×), the assignment's
# difference from its setting A, one run on Office-Home: R has none, as the assignment had no such row.

# %%
SOURCE = {"A": 52.71, "B": 55.27, "C": 55.05, "D": 24.22, "E": 20.84}  # the assignment's validation accuracy (%)
# the per-seed test accuracies (points) of each setting ("A", ...) with n labels per class; x minus y is
# arms[x, n].minus(arms[y, n]), paired by seed (mean difference, 95% interval, or None below 3 seeds)
arms = {(s.split()[0], n): Arm.from_rows(runs, f"{s} @ {n}", "test_acc", label=s.split()[0], scale=100)
        for s in SETTINGS for n in cfg["labels"]}
rows = [{"label": f"{x} − A, {n} labels/class", **dict(zip(("diff", "ci95"), arms[x, n].minus(arms["A", n]))),
         "source": round(SOURCE[x] - SOURCE["A"], 2) if x in SOURCE else None}
        for x in "BCDER" for n in cfg["labels"]]
viz.forest_plot(rows, xlabel="difference from A (scratch), test accuracy points",
                title=f"each setting minus A, paired by seed, n = {len(cfg['seeds'])}");

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for i, s in enumerate(SETTINGS):
    ax.errorbar(list(cfg["labels"]), acc_mean.loc[s], yerr=acc_std.loc[s].fillna(0), marker="o", ms=4, capsize=3,
                color=f"C{i}", label=s, ls="--" if SETTINGS[s][1] == "frozen" else "-")
ax.set(xscale="log", xlabel="labelled images per class", ylabel="test accuracy (%)",
       title="downstream accuracy vs labels (solid: fine-tuned, dashed: frozen)")
ax.set_xticks(list(cfg["labels"]), [str(n) for n in cfg["labels"]])
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
for n in cfg["labels"]:
    order = summaries[n]["test_acc_mean"].sort_values(ascending=False).index
    print(f"{n:>5} labels/class: " + " > ".join(s.split()[0] for s in order))

# %% [markdown]
# (sec-c22)=
# ## 7. Looking at the representations: PCA and t-SNE
#
# PCA projects the 64 features onto the two directions of largest variance: a linear map, faithful to
# global distances, blind to structure that is not along those directions. t-SNE
# {cite}`vandermaaten2008tsne` places points in 2-D so that each keeps its nearest neighbours: a non-linear map that
# shows clusters well and distorts distances between them (the size of a cluster and the gaps between
# clusters mean little). Below, the downstream test images, through the backbone before any
# training, after BYOL, and after supervised pre-training. A number makes "how separated" concrete:
# the kNN accuracy *in the 2-D map* (half the points vote for the other half).

# %%
vis_idx = data.stratified_subset(y_test, cfg["vis_per_class"], seed=0)
x_vis, y_vis = x_test[vis_idx], y_test[vis_idx]
half = torch.arange(len(y_vis)) % 2 == 0
panels = {"random init": random_backbone, "after BYOL": byol_backbone, "after supervised pre-training": sup_backbone}
maps, separation = {"PCA": {}, "t-SNE": {}}, []
for name, backbone in panels.items():
    f = pooled_features(backbone, x_vis, **NORMALIZE)
    f = (f - f.mean(0)) / (f.std(0) + 1e-8)  # standardise each feature, as the linear probe does
    for method, key in (("PCA", "pca"), ("t-SNE", "tsne")):
        xy = torch.as_tensor(viz.project_2d(f, key))
        maps[method][name] = xy.numpy()
        acc = knn_accuracy(xy[half], y_vis[half], xy[~half], y_vis[~half], k=min(10, int(half.sum())))
        separation.append({"features": name, "map": method, "2-D kNN accuracy": acc})
names = [data.FASHION_CLASSES[c] for c in DOWN]
viz.plot_embeddings(maps["PCA"], y_vis, names, size=3.0).suptitle("PCA", y=1.02);
viz.plot_embeddings(maps["t-SNE"], y_vis, names, size=3.0).suptitle("t-SNE", y=1.02);
separation = pd.DataFrame(separation).pivot(index="features", columns="map", values="2-D kNN accuracy").loc[list(panels)]
(separation * 100).round(1)

# %% [markdown]
# ## 8. What it means
#
# **Did BYOL learn anything?** Compare E with R: both train only a linear classifier on frozen
# features, so the difference is what pre-training without labels put into the backbone, and nothing
# downstream can repair a weak backbone. E is far above R at every number of labels, and the 95%
# interval of E − R lies well above 0 at each (the table printed below): minutes of BYOL on five
# classes of clothing taught the ResNet-8 features that carry over to sandals, sneakers, boots,
# shirts and bags.
#
# **Fine-tuning (A, B, C).** Training from scratch is a strong baseline on this data: with 100 images
# per class, a ResNet-8 trained from nothing gets within about two points of the pre-trained ones.
# The supervised backbone (B) has the largest mean gain over A at every number of labels, one to two
# points; the BYOL backbone, fine-tuned (C), about a point or less. Three seeds do not establish either gain
# at 100 labels: both intervals reach below 0 (claim C19), and the interval of C − A contains 0 at
# every number of labels. They reach up to the assignment's gain of about 2.5 points as well, so the
# data do not say our gain is smaller than the assignment's either: differences of a point or two,
# with a seed-to-seed spread of the same size, need more seeds to be told apart. The assignment
# pre-trained a ResNet-50 for 1000 epochs on 100 classes of natural images; our pre-training is
# minutes long, and full fine-tuning with enough labels lets the downstream data overwrite much of
# what the backbone brought.
#
# **Frozen or fine-tuned (D, E against B, C).** In the assignment the frozen backbones were about 30
# points behind fine-tuning (24% and 21% against 53-55%). Here they are a few points behind at most:
# at 100 labels the interval of D − B contains 0 (a frozen supervised backbone is not shown to be
# worse than the fine-tuned one at all), E is about 4 points behind C, and both intervals lie far
# short of the assignment's 30 points (claim C21). C21 as a whole is therefore inconclusive: E − C and
# D − E are supported, D − B is not. The frozen supervised backbone (D) is within about
# a point of fine-tuned BYOL (C). The downstream images come from the same source as the pre-training
# ones (centred 28x28 grey-scale product photos), so a frozen backbone's features fit them;
# Mini-ImageNet photographs and Office-Home's clip art and product images are much further apart, and
# a frozen ResNet-50 there cannot adapt.
#
# **How the ranking changes with the number of labels.** With 10 labels per class every setting
# but R lies within a few points, and the intervals there are several points wide (a different
# labelled subset per seed moves every setting a lot); those of C − A and D − A contain 0: no ranking
# among A-E can be trusted there. R is furthest behind with 10 labels: with 50 examples a logistic
# regression cannot find the few useful directions among 64 random features, while pre-trained
# features make them easy to find. With 100 and 500 labels the order settles at the ends: the
# fine-tuned supervised backbone (B) at or near the top, the frozen BYOL backbone (E) below the
# fine-tuned settings on average (below A and B by intervals that exclude 0 at both 100 and 500
# labels; below C by one that excludes 0 at 100 labels only, see C − E in the table below), and R
# last; in between, C, A and D lie within a couple of points of each other, and their order is
# mostly not one the seeds can vouch for. As labels grow, the linear probe on random features catches up part of the way: the margin of E
# over R shrinks from the smallest to the largest number of labels.
#
# **Supervised or self-supervised?** The supervised backbone is ahead of the BYOL one when both are
# frozen (D above E on average at every number of labels; with 100 and 500 labels the interval of
# D − E lies above 0, with 10 labels D's spread is too large for that) and by about a point on
# average when both are fine-tuned (B against C; with 500 labels the interval of B − C, [+0.72, +1.75],
# lies above 0). Whether B and C are *equal* within a point (claim
# C20), three seeds cannot say: the interval of C − B is wider than that margin, so C20 is
# inconclusive, neither shown equal nor shown different. Labels tell a backbone which differences matter; BYOL is told only which
# differences do not matter (those the augmentations make) and must find the rest itself. Here the
# five labelled clothing classes already teach shape features that serve footwear and bags well.
# With unlabelled images only, BYOL is the one of the two you can have, and E against R says it is
# worth having.
#
# **PCA and t-SNE.** For every backbone the t-SNE map separates the classes more than the PCA map of
# the same features (the 2-D kNN table): t-SNE is built to keep neighbourhoods, PCA to keep the two
# directions of largest variance, which need not be the ones that separate classes. Training changes
# the two maps unevenly: after BYOL the t-SNE map separates the classes far better than before
# training (+10.2 points), while the PCA map moves by 2-4 points, within the noise of one run (a
# binomial standard error of about 2.2 points per map), so BYOL's class information lies in directions other
# than the two of largest variance. Each of these numbers is one run on one set of images, so claim
# C22 is shown, not judged: with one value per map there is no interval. A 2-D map and a linear
# classifier on all 64 features measure different things; do not rank backbones by pictures. And do
# not read cluster sizes or distances between t-SNE clusters: t-SNE does not preserve them.

# %%
MAIN = 100 if 100 in cfg["labels"] else list(cfg["labels"])[-1]  # the labels per class the claims are judged at
PAIRS = {"E − R": "BYOL vs random features, frozen", "C − A": "BYOL fine-tuned vs scratch",
         "B − A": "supervised fine-tuned vs scratch", "D − E": "supervised vs BYOL, frozen",
         "C − E": "BYOL fine-tuned vs frozen"}
gaps = pd.DataFrame({f"{n} labels/class": {f"{k} ({v})": format_difference(*arms[k[0], n].minus(arms[k[-1], n]))
                                             for k, v in PAIRS.items()} for n in cfg["labels"]})
gaps.index.name = "x − y, points: mean [95% interval]"  # paired by seed
gaps

# %% [markdown]
# ## Claims
#
# The claims of the assignment this chapter tests (see the reproduction page). C19-C21 are judged at
# 100 labels per class, each comparison by the 95% interval of the mean per-seed difference between
# two settings (paired: a seed is one labelled subset, shared by every setting), against a test
# declared with the claim before running: a claim that one setting beats another is **supported**
# when the interval lies entirely on the claimed side of 0, **contradicted** when it lies entirely on
# the other side, and **inconclusive** otherwise; a claim of "about equal" is supported when the
# interval lies inside a margin written in the claim. Beside the verdict, a size label says whether
# our difference is smaller than, similar to or larger than the assignment's. C22 rests on one run
# per map: it is shown, not judged.

# %%
labelled = 5 * MAIN  # labelled images per fine-tuning run
ft_batch = min(cfg["ft"]["batch_size"], labelled // 2)  # as in downstream()
# train_classifier and train_byol drop the last incomplete batch, as Budget.of_epochs counts
ft_budget = Budget.of_epochs(labelled, ft_batch, cfg["labels"][MAIN])
byol_budget = Budget.of_epochs(len(x_pre), cfg["byol"]["batch_size"], cfg["byol"]["epochs"])
pre_steps = {"BYOL (C, E)": byol_budget.steps,
             "supervised (B, D)": Budget.of_epochs(len(x_pre), sup_cfg["batch_size"], sup_cfg["epochs"]).steps}
extra = {"labels_per_class": MAIN, "pretraining_optimizer_steps": pre_steps}
a, b, c, d, e = (arms[x, MAIN] for x in "ABCDE")
ACC = "test accuracy (points)"
# the assignment's x − y, validation points on Office-Home (one run each)
src = {k: round(SOURCE[k[0]] - SOURCE[k[-1]], 2) for k in ("BA", "CA", "CB", "DB", "EC", "DE")}
# the 2-D kNN accuracy (points) of each map: a single run, so shown and never judged
map_arm = {(f, m): Arm(f"{m}, {f}", [float(separation.loc[f, m] * 100)]) for f in panels for m in ("PCA", "t-SNE")}
se = 100 * math.sqrt(0.25 / int((~half).sum()))  # largest binomial standard error of a 2-D kNN accuracy
claims = [
    Claim("C19", "Pre-training (supervised or BYOL) then full fine-tuning beats training from scratch by ~3 points",
          source="B − A = +2.56, C − A = +2.34 validation points on Office-Home "
                 "(A 52.71, B 55.27, C 55.05; seed 001 P2, one run each)",
          budget=ft_budget, section="sec-c19", extra=extra,
          note="Minutes of pre-training on five clothing classes, transferred to footwear, shirts and bags; the "
               "assignment pre-trained a ResNet-50 on 100 Mini-ImageNet classes. The test asks only whether "
               "pre-training beats scratch; the size label compares the gain with the assignment's ~2.5 points.",
          comparisons=[
              # "beats": a one-sided claim; both arms ran with the same seeds (same labelled subsets): paired
              Comparison(b, a, "greater", paired=True, source_effect=src["BA"], metric=ACC),
              Comparison(c, a, "greater", paired=True, source_effect=src["CA"], metric=ACC),
          ]),
    Claim("C20", "BYOL and supervised backbones are about equal when fully fine-tuned",
          source="C − B = −0.22 validation points on Office-Home (B 55.27, C 55.05; seed 001 P2, one run each)",
          budget=ft_budget, section="sec-c20", extra=extra,
          comparisons=[
              # "about equal": within 1 accuracy point, a third of the ~3-point gain of pre-training that the
              # same claim set reports (C19); a gap under that would not change which backbone one picks
              Comparison(c, b, "equivalent", margin=1.0, paired=True, source_effect=src["CB"], metric=ACC),
          ]),
    Claim("C21", "Frozen backbones are far worse than fine-tuned ones, and the supervised frozen backbone beats "
                 "the BYOL one",
          source="D − B = −31.05, E − C = −34.21, D − E = +3.38 validation points on Office-Home "
                 "(B 55.27, C 55.05, D 24.22, E 20.84; seed 001 P2, one run each)",
          budget=ft_budget, section="sec-c21", extra=extra,
          note="'Far' is judged by the size label against the assignment's ~30 points, not by the test. Pre-training "
               "and downstream images come from one source here; the assignment went from Mini-ImageNet to "
               "Office-Home. D and E fit a logistic regression on frozen features (no optimizer steps): the budget "
               "is that of B and C.",
          comparisons=[
              Comparison(d, b, "less", paired=True, source_effect=src["DB"], metric=ACC),  # frozen < fine-tuned
              Comparison(e, c, "less", paired=True, source_effect=src["EC"], metric=ACC),
              Comparison(d, e, "greater", paired=True, source_effect=src["DE"], metric=ACC),  # supervised > BYOL
          ]),
    Claim("C22", "Classes separate more in t-SNE than in PCA, and more as training proceeds",
          source="figures only: PCA and t-SNE maps early and late in training (seed 001 P1.5-6), no number",
          budget=byol_budget,
          section="sec-c22",
          extra={"pretraining_optimizer_steps": pre_steps, "test_images": len(y_vis),
                 "binomial_standard_error_points": round(se, 2)},
          note="Separation is the kNN accuracy in the 2-D map (half the images vote for the other half), one run "
               "per map: shown, not judged. 'As training proceeds' compares the untrained backbone with the "
               "trained ones; the budget is BYOL's pre-training (the supervised one in extra).",
          comparisons=[Comparison(map_arm[f, "t-SNE"], map_arm[f, "PCA"], "greater", label=f"t-SNE − PCA, {f}",
                                  metric="2-D kNN accuracy (points)") for f in panels]
          + [Comparison(map_arm[f, m], map_arm["random init", m], "greater", label=f"{f} − random init, {m}",
                        metric="2-D kNN accuracy (points)")
             for f in ("after BYOL", "after supervised pre-training") for m in ("PCA", "t-SNE")]),
]
save_claims("05", claims)
viz.forest_plot(forest_rows(claims[:3]), xlabel=f"a − b, test accuracy points ({MAIN} labels/class)",
                title="claims C19-C21: 95% intervals coloured by verdict");

# %% [markdown]
# ## Exercises
#
# 1. **The loss by hand.** For $q = (1, 0)$ and $z' = (0, 1)$, what is $\mathcal{L}$? And for
#    $z' = (-2, 0)$? What does the symmetric loss of a collapsed network equal?
# 2. **The memory of the target.** With a constant $\tau = 0.99$, how much weight does the target give
#    to the online weights of the last 100 steps, and of the last 500?
# 3. **Remove the predictor.** Pre-train the same backbone for a few epochs with and without the
#    predictor (`build_byol(predictor=False)`) and plot the collapse check and the kNN accuracy of both.
#    What happens to the loss?
# 4. **The target as a fixed random network.** Set $\tau = 1$ for the whole run (`base_tau=1.0`): the
#    target never moves. Does the online network still learn something? (The BYOL paper reports that
#    it does, far more than a random network, far less than BYOL.)
# 5. **Augmentations decide.** Pre-train again (a) with the assignment's jitter and blur
#    (`AUG = dict(AUG, jitter=0.8, p_jitter=0.3, p_blur=0.2)`) and (b) without the crop
#    (`crop_scale=(1.0, 1.0)`). Predict first, then compare the kNN curve and setting E.

# %% tags=["solution", "hide-input"]
# Solution 3: a short run with and without the predictor, on a subset of the pre-training images.
short = dict(cfg["byol"], epochs=cfg["ablation"]["epochs"], batch_size=cfg["ablation"]["batch_size"])
x_short = x_pre[data.stratified_subset(y_pre, cfg["ablation"]["per_class"], seed=0)]
ablation = {}
for with_predictor in (True, False):
    model = build_byol(predictor=with_predictor)
    course_utils.runtime.seed_everything(0)
    h = train_byol(model, x_short, augment=byol_augment(**AUG), seed=0, probe=probe, verbose=False, **short, **NORMALIZE)
    ablation["with predictor" if with_predictor else "without predictor"] = pd.DataFrame(h.records).set_index("epoch")
fig, axes = plt.subplots(1, 3, figsize=(12, 3.0))
for i, (name, h) in enumerate(ablation.items()):
    axes[0].plot(h.index[1:], h["train_loss"].iloc[1:], "o-", ms=3, color=f"C{i}", label=name)
    axes[1].plot(h.index, h["knn_acc"], "o-", ms=3, color=f"C{i}", label=name)
    axes[2].plot(h.index, h["collapse_std"], "o-", ms=3, color=f"C{i}", label=name)
for ax, title in zip(axes, ("loss", "kNN accuracy", "std of normalised z (collapse check)")):
    ax.set(xlabel="epoch", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
for name, h in ablation.items():
    print(f"{name}: final loss {h['train_loss'].iloc[-1]:.3f}, kNN {h['knn_acc'].iloc[-1]:.3f}, "
          f"collapse std {h['collapse_std'].iloc[-1]:.4f} (1/sqrt(128) = {1 / math.sqrt(128):.4f})")

# %% [markdown] tags=["solution"]
# ```{admonition} Solutions
# :class: dropdown
# **1.** $\cos = 0$: $\mathcal{L} = 2$. For $z' = (-2, 0)$: $\cos = -1$, $\mathcal{L} = 4$ (the length of $z'$
# does not matter). A collapsed network gives identical, hence parallel, vectors for both views:
# $\cos = 1$ and the symmetric loss is 0, the global minimum, which is why collapse is a real danger.
#
# **2.** After $n$ steps the online weights of the last $n$ steps carry a total weight $1 - \tau^n$ in
# the target: $1 - 0.99^{100} \approx 0.63$ and $1 - 0.99^{500} \approx 0.993$. The target is an
# average over roughly the last $1/(1 - \tau) = 100$ steps; the cosine schedule lengthens this memory
# towards the end, until the target freezes.
#
# **3.** Without the predictor the loss falls far below the run with the predictor: 0.78 after the
# first epoch and 0.15 after the third, against 1.65 with the predictor. That low loss is not a
# better representation. Without the predictor the collapse check stays close to the untrained,
# nearly collapsed projections (0.011 → 0.020); with the predictor it rises to 0.067. In effect, the
# online projection matches the target's by making all projections point nearly the same way. In so
# short a run (45 steps) the kNN accuracy says little: neither run has yet passed the untrained
# backbone's 0.666. The collapse starts in the projection, and the backbone follows with longer training
# (SimSiam's ablation without a predictor ends at chance level). The collapse check warns before the
# downstream accuracy does, which is why it is worth watching.
#
# **4.** With $\tau = 1$ the online network learns to predict the projections of a fixed random
# network from another view. That target does not collapse (it is fixed), so the online network
# learns features that are predictive of random features of the other view, better than random
# features, but the target never improves, so the representation stays weak. We did not run this
# here; the experiment that motivates the BYOL paper (its introduction) found exactly this: 18.8%
# top-1 on ImageNet with a fixed random target, against 1.4% for the random network and 74.3% for
# BYOL. BYOL's gain comes from bootstrapping, the target improving with the online network.
#
# **5.** (a) Weaker jitter applied less often makes the two views easier to match: the loss falls
# faster and lower, which says nothing good about the features; measure E before concluding. (b)
# Without crops the views differ only in flips, brightness, contrast and blur, and the network can
# match them with low-level statistics; expect the kNN accuracy and E to drop towards R. Cropping
# forces the network to recognise a garment from any part of it, the invariance that carries over to
# the downstream classes; SimCLR's ablations found cropping the most important single augmentation.
# ```
