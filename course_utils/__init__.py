"""Shared code for the course *Deep Learning for Computer Vision*.

The module map: one concept per module, one home per public name (import it from the module that
defines it; the package itself exports only ``setup``, ``by_profile`` and ``get_profile``). The last
column says which chapters use a module (0 is the quickstart); ``tests/test_package.py`` checks that
this map lists every module and that the column matches the chapters' imports.

| module | what it holds | chapters |
|---|---|---|
| `runtime` | `setup()` (seeds, device, profile, provenance line), `by_profile` (a `Config` shown one key per line), `get_profile`, `seed_everything` | 0, 1, 2, 3, 4, 5, 6, 7 |
| `io` | atomic file writes: a file is absent or complete, never half-written | 1, 2, 3, 4, 6, 7 |
| `hooks` | context managers that change a model for a while and restore it: `eval_mode`, `train_mode`, `capture_output`, `forward_hooks`, `dry_run` | 7 |
| `data` | find, verify and load Fashion-MNIST and the digits; seeded splits and subsets; `normalize` | 0, 1, 2, 3, 4, 5, 6, 7 |
| `loader` | `TensorLoader` (batches from tensors in memory, batched augmentation) and `MixupLoader` | 0, 1, 2, 3, 4, 7 |
| `augment` | every batched transform, with one affine `warp`: crop, flip, affine, BYOL's views, mixup | 0, 1, 2, 4, 5 |
| `datasets.pairs` | distorted images and the transformation-pair data set | 3 |
| `datasets.canvas` | segmentation canvases with per-pixel labels, and the one `paste` of items onto canvases | 6 |
| `datasets.spurious` | fashion items with digits: a spurious correlation under control | 7 |
| `layers.norms` | BN, IN, BIN, LN, GN from scratch, `NORMS`/`make_norm`, `ACTIVATIONS`/`make_act` | 1 |
| `layers.blocks` | `conv_norm`, the one residual `BasicBlock` (its shortcut an option), `kaiming_init` | — |
| `layers.deform` | deformable convolution from scratch (`deform_conv2d_reference`) and the `DeformConv2d` layer | 3 |
| `models.resnet` | ResNet(6n+2), `resnet6n2`, `reference_resnet` | 0, 1, 4, 5 |
| `models.vgg` | VGG-ResNet(a, b, c), the simple CNN family, `build_from_config` | 2 |
| `models.deform_nets` | the two deformable-convolution networks of chapter 3 | 3 |
| `models.embedding` | embedding networks for metric learning | 4 |
| `models.byol` | BYOL's online and target networks and its moving-average rate | 5 |
| `models.segmentation` | hourglass, U-Net, FCN-32s, DeepLabv3, `build_segmenter` | 6 |
| `models.small_vgg` | the plain VGG whose filters chapter 7 inspects | 7 |
| `losses` | every loss: triplet, segmentation (weighted CE, Dice, Poly-1), BYOL, mixup | 2, 4, 5, 6 |
| `metrics` | classification and segmentation metrics (accuracy, F1, confusion, mIoU, AP) | 0, 1, 2, 3, 4, 5, 6 |
| `optim` | optimisers with their schedules and the one decay/no-decay split | 2, 3, 4, 7 |
| `budget` | `estimate_line` (a configuration cell's training FLOPs and their time on a Colab T4), `count_flops`, the dry-run ledger (`record_fit`, `summarize_ledger`) | 0, 1, 2, 3, 4, 5, 6, 7 |
| `train` | the one training loop `fit`, `History`, `EarlyStopping`, `evaluate`, the `Snapshots` hook | 0, 1, 2, 3, 4 |
| `recipes` | `train_classifier`, `train_segmenter`, `train_byol`: thin callers of `fit`; `lockstep_sgd` (two models stepped side by side, to compare implementations) | 1, 4, 5, 6, 7 |
| `features` | inference without training: `predict`, pooled features, probes (linear, kNN), class separation in PCA / t-SNE maps, batch-norm recalibration | 2, 4, 5, 6, 7 |
| `summary` | how big a model is: `count_parameters`, `model_summary`, `profile_operators` | 1, 2, 3, 4, 5, 6, 7 |
| `pretrain` | train a backbone once, keep it on disk (with its states during training), load it on later runs | 4, 5, 7 |
| `experiments` | configurations x seeds with finished runs kept on disk; summaries over seeds | 1, 2, 3, 4, 5, 6, 7 |
| `intervals` | the statistics of a verdict: 95% intervals of mean differences (scipy.stats) | 2, 3, 4, 5, 6, 7 |
| `claims` | claims with declared tests, their verdicts, and the result files with the data | 1, 2, 3, 4, 5, 6, 7 |
| `reproduction` | renders `book/reproduction.md` and its forest plots from the result files | — |
| `viz` | figures of data and results: curves, images, confusion matrices, embeddings, masks, forest plots | 0, 1, 2, 3, 4, 5, 6, 7 |
| `diagrams` | drawings that explain an idea: which axes a norm averages over, BYOL's two branches, the hourglass | 1, 5, 6 |
| `segfigures` | figures of segmentation results: loss curves of several runs, per-class precision-recall curves with AP | 6 |
| `interpret.maps` | CAM, Grad-CAM (via `grad-cam`), occlusion sensitivity | 1, 7 |
| `interpret.receptive` | receptive fields: computed layer by layer and measured by gradients | 2, 7 |
| `interpret.filters` | top-activating patches, class selectivity, filter ablation | 7 |

Importing the package does no work: no data is read and nothing is downloaded.
"""

__version__ = "0.1.0"

from course_utils.runtime import by_profile, get_profile, setup  # noqa: E402

__all__ = ["__version__", "by_profile", "get_profile", "setup"]
