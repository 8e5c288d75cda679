"""Cost of a deformable convolution: from-scratch reference vs torchvision vs a regular convolution.

Each layer runs forward + backward (input, weights and offsets all need gradients, as in training) at
the shapes of Chapter 3: the two convolutions of ``TwoBlockCNN`` and the two of the pair classifier's
last stage. A deformable layer here includes its offset-predicting convolution. Then whole training
steps of ``TwoBlockCNN``, regular vs deformable. Prints the time ratios; there are no thresholds.

Batch sizes are multiples of 32: torchvision's CPU kernel processes the batch in chunks of the largest
divisor of the batch size that is at most 32, so a batch of, say, 100 would run in chunks of 25.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import best_of, report
from course_utils.layers.deform import DeformConv2d
from course_utils.models.deform_nets import TwoBlockCNN
from course_utils.runtime import seed_everything

# name, C_in, C_out, input size, stride
LAYERS = [
    ("cnn block1 1->32 @28", 1, 32, 28, 1),
    ("cnn block2 32->64 @14", 32, 64, 14, 1),
    ("pair stage3 64->128 @14 s2", 64, 128, 14, 2),
    ("pair stage3 128->128 @7", 128, 128, 7, 1),
]


def step(layer: nn.Module, x: torch.Tensor):
    """One forward + backward, gradients w.r.t. the input and every parameter."""
    def run():
        layer.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_(True)
        layer(xi).square().mean().backward()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128, help="batch size (a multiple of 32)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.batch % 32:
        raise SystemExit(f"--batch must be a multiple of 32 (torchvision chunks the batch by 32), got {args.batch}")
    seed_everything(0)
    torch.set_flush_denormal(True)
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, best of {args.repeats}; times in ms per forward+backward")
    print(f"{'layer':<28}{'regular':>10}{'torchvision':>13}{'reference':>11}{'tv/regular':>12}{'ref/tv':>8}")
    for name, cin, cout, size, stride in LAYERS:
        x = torch.randn(args.batch, cin, size, size)
        regular = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        tv = DeformConv2d(cin, cout, 3, stride, 1, backend="torchvision", bias=False)
        nn.init.normal_(tv.offset_conv.weight, std=0.1)  # off the regular grid, as after some training
        ref = DeformConv2d(cin, cout, 3, stride, 1, backend="reference", bias=False)
        ref.load_state_dict(tv.state_dict())
        times = {}
        for key, layer in (("regular", regular), ("torchvision", tv), ("reference", ref)):
            run = step(layer, x)
            run()  # warm-up
            times[key] = best_of(run, args.repeats) * 1000
        print(f"{name:<28}{times['regular']:>10.1f}{times['torchvision']:>13.1f}{times['reference']:>11.1f}"
              f"{times['torchvision'] / times['regular']:>12.1f}{times['reference'] / times['torchvision']:>8.2f}")
        tag = name.split(" @")[0].replace(" ", "_").replace("->", "to")
        report(f"deform_torchvision_vs_conv[{tag}]", times["torchvision"] / times["regular"], "none, a ratio")
        report(f"deform_reference_vs_torchvision[{tag}]", times["reference"] / times["torchvision"], "none, a ratio")

    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    model_times = {}
    for key, model in (("regular", TwoBlockCNN()), ("deformable", TwoBlockCNN(deformable=True)),
                       ("deformable (reference)", TwoBlockCNN(deformable=True, backend="reference"))):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def train_step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        train_step()
        model_times[key] = best_of(train_step, args.repeats) * 1000
        print(f"TwoBlockCNN {key:<24} {model_times[key]:8.1f} ms per training step")
    report("two_block_cnn_step_deformable_vs_regular", model_times["deformable"] / model_times["regular"], "none, a ratio")
    report("two_block_cnn_step_reference_vs_torchvision",
           model_times["deformable (reference)"] / model_times["deformable"], "none, a ratio")


if __name__ == "__main__":
    main()
