import json

import pandas as pd
import pytest

from course_utils.experiments import format_mean_std, run_grid, summarize


def _train(config, seed):
    return {"acc": config["base"] + 0.01 * seed, "curve": [1.0, 0.5]}


def test_run_grid_caches_and_resumes(tmp_path):
    configs = {"a": {"base": 0.5}, "b": {"base": 0.7}}
    calls = []

    def train(config, seed):
        calls.append((config["base"], seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the grid is interrupted during its third run
        return _train(config, seed)

    with pytest.raises(KeyboardInterrupt):
        run_grid(configs, [0, 1], train, cache_dir=tmp_path, verbose=False)
    assert len(list(tmp_path.glob("*.json"))) == 2 and not list(tmp_path.glob(".*tmp"))
    df = run_grid(configs, [0, 1], train, cache_dir=tmp_path, verbose=False)
    assert calls == [(0.5, 0), (0.5, 1), (0.7, 0), (0.7, 0), (0.7, 1)]  # only the missing runs were trained
    assert list(df["variant"]) == ["a", "a", "b", "b"] and df["acc"].tolist() == pytest.approx([0.5, 0.51, 0.7, 0.71])
    assert df["curve"][0] == [1.0, 0.5]
    # a changed config is a new run, never a stale cached one
    df2 = run_grid({"a": {"base": 0.6}}, [0], _train, cache_dir=tmp_path, verbose=False)
    assert df2["acc"][0] == pytest.approx(0.6)
    assert all("run_seconds" in json.loads(p.read_text()) for p in tmp_path.glob("*.json"))


def test_summarize_mean_std_and_delta():
    df = pd.DataFrame({"variant": ["base"] * 3 + ["x"] * 3 + ["y"] * 3,
                       "seed": [0, 1, 2] * 3,
                       "acc": [0.90, 0.91, 0.92, 0.80, 0.81, 0.82, 0.905, 0.915, 0.925]})
    s = summarize(df, ["acc"], baseline="base")
    assert list(s.index) == ["base", "x", "y"] and s["seeds"].tolist() == [3, 3, 3]
    assert s.loc["x", "acc_mean"] == pytest.approx(0.81) and s.loc["x", "acc_std"] == pytest.approx(0.01)
    assert s.loc["x", "acc_delta"] == pytest.approx(-0.10) and s.loc["y", "acc_delta"] == pytest.approx(0.005)
    assert not any(c.endswith("noise") for c in s.columns)  # a description: verdicts come from intervals (claims)
    table = format_mean_std(s, ["acc"])
    assert table.loc["x", "acc"] == "81.00 ± 1.00" and table.loc["y", "Δ acc"] == "+0.50"
    assert table.loc["x", "Δ acc"] == "-10.00"
    with pytest.raises(KeyError, match="baseline 'z'"):
        summarize(df, ["acc"], baseline="z")


def _train_torch(config, seed):
    import os

    import torch

    torch.manual_seed(seed)
    w = torch.randn(8, 4) * config["scale"]
    return {"value": float((w @ w.T).trace()), "pid": os.getpid(), "threads": torch.get_num_threads()}


def test_run_grid_with_worker_processes_matches_the_serial_grid(tmp_path):
    import os

    configs = {"a": {"scale": 1.0}, "b": {"scale": 2.0}, "c": {"scale": 0.5}}
    serial = run_grid(configs, [0, 1], _train_torch, cache_dir=tmp_path / "serial", verbose=False)
    parallel = run_grid(configs, [0, 1], _train_torch, cache_dir=tmp_path / "parallel", verbose=False, workers=2)
    assert parallel[["variant", "seed"]].equals(serial[["variant", "seed"]])  # same rows, same order
    assert parallel["value"].tolist() == pytest.approx(serial["value"].tolist(), rel=1e-6)
    assert set(serial["pid"]) == {os.getpid()}
    assert os.getpid() not in set(parallel["pid"]) and set(parallel["threads"]) == {1}  # children, 1 thread each
    again = run_grid(configs, [0, 1], _train_torch, cache_dir=tmp_path / "parallel", verbose=False, workers=2)
    assert again["pid"].tolist() == parallel["pid"].tolist()  # read back from the cache, nothing retrained


def _train_fails_on_b(config, seed):
    if config["scale"] == 2.0:
        raise FloatingPointError("loss diverged")
    return {"value": config["scale"] + seed}


def test_run_grid_worker_failure_names_the_run_and_keeps_finished_ones(tmp_path):
    configs = {"a": {"scale": 1.0}, "b": {"scale": 2.0}}
    with pytest.raises(RuntimeError, match=r"(?s)b seed 0.*FloatingPointError: loss diverged"):
        run_grid(configs, [0], _train_fails_on_b, cache_dir=tmp_path, verbose=False, workers=2)
    assert len(list(tmp_path.glob("a-s0-*.json"))) == 1 and not list(tmp_path.glob("b-*"))
    assert not list(tmp_path.glob(".*"))  # no error file or temp file left behind
    with pytest.raises(ValueError, match="needs cache_dir"):
        run_grid(configs, [0], _train_torch, workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_grid(configs, [0], _train_torch, cache_dir=tmp_path, workers=0)


def test_stat_table_is_summarize_unstacked_with_the_same_floats():
    from course_utils.experiments import stat_table

    df = pd.DataFrame({"variant": ["base"] * 3 + ["x"] * 3 + ["one"], "seed": [0, 1, 2, 0, 1, 2, 0],
                       "acc": [0.90, 0.91, 0.92, 0.80, 0.82, 0.84, 0.5], "loss": [1.0, 1.1, 1.2, 2.0, 2.1, 2.2, 3.0]})
    s = summarize(df, ["acc", "loss"], baseline="base")
    mean = stat_table(s)
    assert list(mean.columns) == ["acc", "loss"] and list(mean.index) == ["base", "x", "one"]
    delta = stat_table(s, "delta", ["acc"], scale=100)
    assert list(delta.columns) == ["acc"]
    for v in s.index:  # bit-identical to reading the flat column and scaling it
        assert delta.loc[v, "acc"] == s.loc[v, "acc_delta"] * 100
        assert delta.loc[v, "acc"] == (float(s.loc[v, "acc_mean"]) - float(s.loc["base", "acc_mean"])) * 100
        assert mean.loc[v, "loss"] == s.loc[v, "loss_mean"]
    assert delta.loc["x", "acc"] == pytest.approx(-9.0)
    std = stat_table(s, "std", scale=100)
    assert std.loc["base", "acc"] == pytest.approx(1.0) and pd.isna(std.loc["one", "acc"])  # one seed: no std
    with pytest.raises(KeyError, match="nope"):
        stat_table(s, "mean", ["acc", "nope"])
    with pytest.raises(KeyError):
        stat_table(s, "median")




def test_a_dry_run_trains_the_first_seed_and_counts_it_for_every_seed(tmp_path, monkeypatch):
    from course_utils.budget import read_ledger, record_fit

    monkeypatch.setenv("COURSE_DRY_RUN", "2")
    ledger = tmp_path / "ledger.json"
    calls = []

    def train(config, seed):
        calls.append(seed)
        record_fit(100, 10, 4, path=ledger)
        return {"acc": 0.5}

    rows = run_grid({"a": {"lr": 0.1}, "b": {"lr": 0.2}}, [0, 1, 2], train, cache_dir=tmp_path / "runs", workers=2)
    assert calls == [0, 0] and list(rows["seed"]) == [0, 0]
    assert [r["steps"] for r in read_ledger(ledger)] == [30, 30]
