"""Training FLOP/s of the reference ResNet against fp32 matmul FLOP/s on the same machine (goal >= 0.7).

FLOPs of one training step (forward + backward) are counted exactly with
``torch.utils.flop_counter.FlopCounterMode``; the matmul peak is a 2048x2048 fp32 matrix product.
"""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import best_of, report, setup
from course_utils.models.resnet import reference_resnet


def matmul_flops_per_s(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = best_of(lambda: [a @ b for _ in range(5)], 3) / 5
    return 2 * n ** 3 / t


def main():
    setup()
    batch = 256
    model = reference_resnet().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    t = best_of(lambda: [step() for _ in range(5)], 3) / 5
    model_rate, peak = flops / t, matmul_flops_per_s()
    print(f"one training step of batch {batch}: {flops / 1e9:.2f} GFLOP in {t * 1e3:.0f} ms -> "
          f"{model_rate / 1e9:.1f} GFLOP/s; fp32 matmul {peak / 1e9:.1f} GFLOP/s")
    report("resnet_training_flops_vs_matmul", model_rate / peak, ">= 0.7")


if __name__ == "__main__":
    main()
