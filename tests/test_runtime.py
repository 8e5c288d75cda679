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
