"""The cached backbone: trains once, loads afterwards, retrains on a new config, explains a bad cache."""

import re

import pytest
import torch
from torch import nn

from course_utils.pretrain import checkpoint_path, config_key, pretrained_backbone

CONFIG = {"epochs": 2, "lr": 0.1, "seed": 0}


def build():
    return nn.Linear(3, 2)


class CountingTrainer:
    """A ``train_fn`` that records its calls and changes the weights deterministically."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        with torch.no_grad():
            model.weight.fill_(self.calls)
            model.bias.fill_(-0.5)


def test_first_call_trains_and_writes_one_file(tmp_path):
    train = CountingTrainer()
    model, cached, path = pretrained_backbone(build, train, CONFIG, tmp_path / "cache")
    assert train.calls == 1 and not cached
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temp file left behind
    assert path == checkpoint_path(tmp_path / "cache", CONFIG) and path.name.startswith("backbone-")
    assert torch.equal(model.weight, torch.ones(2, 3))
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["weight"], model.weight) and torch.equal(saved["bias"], model.bias)


def test_second_call_loads_identical_weights_without_training(tmp_path):
    train = CountingTrainer()
    first = pretrained_backbone(build, train, CONFIG, tmp_path)
    second = pretrained_backbone(build, train, dict(reversed(CONFIG.items())), tmp_path)  # key order is irrelevant
    assert train.calls == 1 and second.from_cache and second.path == first.path
    assert second.model is not first.model
    for k, v in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[k], v)
    assert len(list(tmp_path.iterdir())) == 1


def test_changed_config_retrains_into_a_new_file(tmp_path):
    train = CountingTrainer()
    first = pretrained_backbone(build, train, CONFIG, tmp_path)
    changed = pretrained_backbone(build, train, {**CONFIG, "epochs": 3}, tmp_path)
    assert train.calls == 2 and not changed.from_cache and changed.path != first.path
    assert torch.equal(changed.model.weight, torch.full((2, 3), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, changed.path.name])
    assert config_key(CONFIG) != config_key({**CONFIG, "epochs": 3})
    assert pretrained_backbone(build, train, CONFIG, tmp_path, name="other").path != first.path


def test_mismatched_cache_says_which_file_to_delete(tmp_path):
    path = pretrained_backbone(build, CountingTrainer(), CONFIG, tmp_path).path
    train = CountingTrainer()
    with pytest.raises(RuntimeError, match=re.escape(f"delete {path} to retrain")):
        pretrained_backbone(lambda: nn.Linear(4, 2), train, CONFIG, tmp_path)  # other architecture
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=re.escape(f"delete {path} to retrain")):
        pretrained_backbone(build, train, CONFIG, tmp_path)
    assert train.calls == 0  # a bad cache is reported, never silently overwritten
    path.unlink()
    assert not pretrained_backbone(build, train, CONFIG, tmp_path).from_cache and train.calls == 1


def test_config_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        pretrained_backbone(build, CountingTrainer(), {"transform": object()}, tmp_path)
