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


# --------------------------------------------------------------------------------------------------
# States during training (StateRecorder) and runs kept with what their training returned (pretrained_run)

def test_state_recorder_keeps_the_listed_epochs_as_copies_and_passes_the_probe_on():
    from course_utils.pretrain import StateRecorder

    model = build()
    recorder = StateRecorder([0, 2], probe=lambda m: {"w": float(m.weight.detach().sum())})
    for epoch in range(4):  # what fit does with monitor_before=True: epoch 0 before any step
        with torch.no_grad():
            model.weight.fill_(epoch)
        assert recorder(model) == {"w": 6.0 * epoch}
    assert sorted(recorder.states) == [0, 2]
    assert torch.equal(recorder.states[0]["weight"], torch.zeros(2, 3))  # a copy, not the live tensor
    assert torch.equal(recorder.states[2]["weight"], torch.full((2, 3), 2.0))
    wrapped = nn.Sequential()
    wrapped.backbone = build()
    only = StateRecorder([0], attr="backbone")
    assert only(wrapped) == {} and set(only.states[0]) == {"weight", "bias"}  # the attribute's state only
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        StateRecorder([-1])


def test_state_recorder_under_fit_records_epoch_zero_and_the_trained_states():
    from course_utils.pretrain import StateRecorder
    from course_utils.recipes import train_classifier
    from tests.conftest import toy_classification, toy_classifier

    x, y = toy_classification()
    model = toy_classifier()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    recorder = StateRecorder([0, 1, 3])
    h = train_classifier(model, (x, y), None, epochs=3, batch_size=16, lr=0.1, monitor=recorder, monitor_before=True,
                         progress=False, verbose=False)
    assert len(h) == 4 and sorted(recorder.states) == [0, 1, 3]  # epoch 0 is recorded too
    assert all(torch.equal(recorder.states[0][k], v) for k, v in start.items())
    assert all(torch.equal(recorder.states[3][k], v) for k, v in model.state_dict().items())  # the last = the result
    assert not torch.equal(recorder.states[1]["4.weight"], recorder.states[3]["4.weight"])


def test_pretrained_run_keeps_what_training_returned_and_reads_it_back(tmp_path):
    from course_utils.pretrain import pretrained_run

    train = CountingTrainer()

    def train_and_report(model):
        train(model)
        return {"history": [{"epoch": 1, "loss": 0.5}], "states": {0: {"w": torch.arange(3.0)}}}

    first = pretrained_run(build, train_and_report, CONFIG, tmp_path)
    second = pretrained_run(build, train_and_report, CONFIG, tmp_path)
    assert train.calls == 1 and not first.from_cache and second.from_cache
    assert second.extra["history"] == [{"epoch": 1, "loss": 0.5}]
    assert torch.equal(second.extra["states"][0]["w"], torch.arange(3.0))
    assert torch.equal(first.model.weight, second.model.weight)
    first.path.with_suffix(".extra.pt").unlink()
    with pytest.raises(RuntimeError, match=re.escape(f"delete {first.path}")):
        pretrained_run(build, train_and_report, CONFIG, tmp_path)
