import random

import numpy as np
import pytest
import torch

import course_utils
from course_utils.runtime import by_profile, get_profile, setup


def test_profile_resolution(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert get_profile() == "smoke" and by_profile(smoke=1, cpu=2, gpu=3) == 1
    monkeypatch.setenv("COURSE_PROFILE", "GPU")
    assert get_profile() == "gpu"
    monkeypatch.delenv("COURSE_PROFILE")
    assert get_profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    assert by_profile(smoke=1, cpu=2, gpu=3, profile="cpu") == 2


def test_unknown_profile_lists_the_valid_names(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        get_profile()
    with pytest.raises(ValueError, match="Unknown profile 'laptop'"):
        setup(0, profile="laptop")


def test_setup_seeds_everything_and_prints_provenance(capsys):
    rt = setup(123, profile="smoke", data_source="test data")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    setup(123, profile="smoke", data_source="test data", quiet=True)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    line = capsys.readouterr().out.strip()
    assert line == rt.provenance and line.startswith("profile=smoke | device=")
    assert f"course_utils {course_utils.__version__}" in line and "torch " in line and "data: test data" in line


def test_by_profile_shows_a_config_one_key_per_line_and_stays_a_plain_dict():
    import json

    from IPython.lib.pretty import pretty

    from course_utils.runtime import Config, by_profile

    cfg = by_profile(smoke={}, cpu=dict(data=dict(per_class=400, epochs=4), seeds=[0, 1, 2], labels=list(range(60)),
                                        lr=0.05), gpu={}, profile="cpu")
    assert isinstance(cfg, Config) and isinstance(cfg, dict) and cfg["seeds"] == [0, 1, 2]
    assert json.loads(json.dumps(cfg)) == dict(cfg)  # run_grid keys and result files see a plain dict
    lines = pretty(cfg).splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == ["data", "seeds", "labels", "lr"]
    assert max(len(line) for line in lines) <= 100  # no sideways scrolling in the book
    assert lines[0] == "data    {'per_class': 400, 'epochs': 4}"
    assert by_profile(smoke=1, cpu=8, gpu=50, profile="cpu") == 8  # other values come back as they are


def test_setup_chooses_a_simulated_accelerator_and_names_it(monkeypatch):
    import course_utils.runtime as runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4 (simulated)")
    monkeypatch.setattr(runtime, "_DEVICE", None)
    rt = setup(0, profile="gpu", data_source="test data", quiet=True)
    assert rt.device == torch.device("cuda") and runtime.current_device() == torch.device("cuda")
    assert "device=cuda (Tesla T4 (simulated))" in rt.provenance


def test_place_on_device_moves_a_model_loudly_and_only_when_needed(monkeypatch):
    import course_utils.runtime as runtime
    from torch import nn

    monkeypatch.setattr(runtime, "_DEVICE", torch.device("meta"))  # a second device that exists without a GPU
    model = nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="moving it to meta, the device course_utils.setup chose"):
        assert runtime.place_on_device(model) == torch.device("meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already there: no warning
        assert runtime.place_on_device(model) == torch.device("meta")


def test_dry_run_steps_reads_the_environment(monkeypatch):
    from course_utils.runtime import dry_run_steps

    monkeypatch.delenv("COURSE_DRY_RUN", raising=False)
    assert dry_run_steps() is None
    monkeypatch.setenv("COURSE_DRY_RUN", "3")
    assert dry_run_steps() == 3
    assert "(dry run: 3 steps)" in setup(0, profile="gpu", data_source="x", quiet=True).provenance
    monkeypatch.setenv("COURSE_DRY_RUN", "few")
    with pytest.raises(ValueError, match="positive number of steps.*unset it"):
        dry_run_steps()
