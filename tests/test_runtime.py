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
