import torch
from torch import nn

from course_utils.models.resnet import resnet6n2
from course_utils.summary import count_parameters, model_summary, profile_operators


def test_summary_of_a_known_network():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).train()
    t = model_summary(model, (2, 1, 28, 28), depth=1)
    assert t["layer"].tolist() == ["0", "1", "2", "3"]
    assert t["params"].tolist() == [4 * 9 + 4, 0, 0, 4 * 26 * 26 * 10 + 10]
    assert t["output shape"].tolist() == [(2, 4, 26, 26), (2, 4, 26, 26), (2, 2704), (2, 10)]
    assert model.training and not any(m._forward_hooks for m in model.modules())


def test_summary_of_resnet14_adds_up():
    model = resnet6n2(2, 10)
    t = model_summary(model, (1, 1, 28, 28), depth=1)
    assert t["layer"].tolist() == ["stem", "stage1", "stage2", "stage3", "fc"]
    assert t["params"].sum() == sum(p.numel() for p in model.parameters())
    assert t.set_index("layer").loc["stage3", "output shape"] == (1, 64, 7, 7)
    # a stage-1 block: two 3x3 convs 16->16 without bias, two norms with gamma and beta
    assert model_summary(model, (1, 1, 28, 28), modules=["stage1.0"])["params"][0] == 2 * (16 * 16 * 9 + 2 * 16)


def test_count_parameters_all_or_trainable_only():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    assert count_parameters(model) == (9 * 4 + 4) + (4 + 4) + (4 * 2 + 2) == 58  # buffers are not parameters
    model[0].requires_grad_(False)
    assert count_parameters(model) == 58 and count_parameters(model, trainable_only=True) == 58 - 40
    assert count_parameters(nn.ReLU()) == 0


def test_summary_restores_each_submodules_mode():
    model = resnet6n2(1, 10).train()
    model.stage1.eval()  # a frozen stage, as a caller may leave it
    before = {n: m.training for n, m in model.named_modules()}
    running = model.stem[1].running_mean.clone()
    model_summary(model, (2, 1, 28, 28), depth=1)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert torch.equal(model.stem[1].running_mean, running)  # ran in eval mode: no statistics updated


def test_profile_operators_lists_every_operator_of_a_training_step_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    calls = {"n": 0}

    def step():
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    before = model[0].weight.detach().clone()
    ops = profile_operators(step, steps=4, warmup=2)
    assert calls["n"] == 6 and not torch.equal(before, model[0].weight)  # 2 warm-up + 4 profiled steps, trained
    assert list(ops.columns) == ["operator", "calls per step", "self ms per step"]
    assert ops["operator"].is_unique and (ops["self ms per step"] >= 0).all()
    assert ops["self ms per step"].is_monotonic_decreasing  # most self time first (no threshold on times)
    per_step = ops.set_index("operator")["calls per step"]
    assert per_step["aten::convolution"] == 1 and per_step["aten::convolution_backward"] == 1
    shaped = profile_operators(step, steps=2, warmup=0, by_input_shape=True)
    assert shaped["operator"].is_unique
    assert "aten::convolution [6, 1, 8, 8]" in set(shaped["operator"])  # the first input's shape names the layer
