"""Run a grid of configurations x seeds, keep every finished run on disk, and summarise over seeds.

Each run is stored as one small JSON file (written atomically) named after its configuration and
seed, so an interrupted grid resumes where it stopped and a finished one is read back instantly.
``summarize`` turns the runs into mean, std and the difference of means vs a baseline: a description, not a
verdict (whether a difference is real is decided by its 95% interval in ``course_utils.claims``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from course_utils.budget import repeated
from course_utils.io import atomic_write_text
from course_utils.runtime import dry_run_steps


def _key(name: str, config: Mapping, seed: int) -> str:
    blob = json.dumps({"config": config, "seed": seed}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    return f"{safe}-s{seed}-{digest}.json"


def run_grid(configs: Mapping[str, Mapping], seeds: Sequence[int], train_fn: Callable[..., Mapping],
             cache_dir: str | Path | None = None, verbose: bool = True, workers: int = 1) -> pd.DataFrame:
    """Call ``train_fn(config, seed) -> {metric: value, ...}`` for every config x seed; return one row per run.

    Args:
        configs: ``{variant name: config dict}``; the config (JSON-serialisable) is passed to ``train_fn``.
        seeds: the seeds to run each config with.
        train_fn: trains one model and returns a flat dict of numbers (it may also hold lists, e.g. curves).
        cache_dir: where finished runs are kept; a run whose file exists is not trained again. A changed
            config gets a new file name, so stale results are never reused.
        workers: with ``workers > 1`` the runs not yet in ``cache_dir`` are trained by that many forked
            processes with one PyTorch thread each (several small models train faster side by side than
            one at a time on several threads of a CPU). Needs ``cache_dir`` and the ``fork`` start method
            (Linux, macOS); meant for CPUs, keep 1 on a GPU. Rows come back in the same order either way.

    Under a dry run (``COURSE_DRY_RUN``) only the first seed runs, in this process, and the FLOPs its trainings
    record count once per seed (``budget.repeated``).
    """
    cache = Path(cache_dir) if cache_dir is not None else None
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    repeat = 1
    if dry_run_steps():  # a dry run trains the first seed of each config here, counted for every seed
        seeds, workers, repeat = list(seeds)[:1], 1, len(seeds)
    in_workers = set()
    if workers > 1:
        if cache is None:
            raise ValueError("run_grid(workers > 1) needs cache_dir: the worker processes hand their results "
                             "back through it")
        pending = [(name, config, seed) for name, config in configs.items() for seed in seeds
                   if not (cache / _key(name, config, seed)).exists()]
        if len(pending) > 1:
            _train_in_processes(pending, train_fn, cache, min(workers, len(pending)))
            in_workers = {_key(name, config, seed) for name, config, seed in pending}
    rows = []
    for name, config in configs.items():
        for seed in seeds:
            path = cache / _key(name, config, seed) if cache is not None else None
            if path is not None and path.exists():
                result = json.loads(path.read_text())
                cached = True
            else:
                t0 = time.perf_counter()
                with repeated(repeat):
                    result = dict(train_fn(config, seed))
                result.setdefault("run_seconds", time.perf_counter() - t0)
                if path is not None:
                    atomic_write_text(path, json.dumps(result))
                cached = False
            if verbose:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float) and k != "run_seconds")
                origin = " (in a worker)" if path is not None and path.name in in_workers else " (cached)" if cached else ""
                print(f"{name:>16} seed {seed}: {shown}{origin}", flush=True)
            rows.append({"variant": name, "seed": seed, **result})
    return pd.DataFrame(rows)


def _train_in_processes(tasks, train_fn, cache: Path, workers: int) -> None:
    """Train ``tasks`` [(name, config, seed)] in ``workers`` forked processes; each result lands in ``cache``."""
    import multiprocessing as mp
    import traceback

    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("run_grid(workers > 1) needs the 'fork' start method; use workers=1 on this system")
    cache.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    for i in range(len(tasks)):
        queue.put(i)
    for _ in range(workers):
        queue.put(None)
    errors = cache / f".errors-{os.getpid()}"

    def work():  # runs in a child: forked, so train_fn and the data need no pickling
        # Python-level output of a forked child must not reach the parent's stream objects: in a Jupyter
        # kernel they share the parent's message sockets, and a child writing to them can leave the
        # kernel's client waiting forever. Errors still come back, through the errors file.
        sys.stdout = sys.stderr = open(os.devnull, "w")
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
        while (i := queue.get()) is not None:
            name, config, seed = tasks[i]
            try:
                t0 = time.perf_counter()
                result = dict(train_fn(config, seed))
                result.setdefault("run_seconds", time.perf_counter() - t0)
                atomic_write_text(cache / _key(name, config, seed), json.dumps(result))
            except BaseException:
                with open(errors, "a") as f:
                    f.write(f"--- {name} seed {seed}:\n{traceback.format_exc()}")
                os._exit(1)
        os._exit(0)

    procs = [ctx.Process(target=work, daemon=True) for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if errors.exists():
        message = errors.read_text()
        errors.unlink()
        raise RuntimeError(f"a run failed in a worker process (finished runs are kept in {cache}):\n{message}")
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"worker processes exited with codes {failed} (finished runs are kept in {cache})")


def summarize(df: pd.DataFrame, metrics: Sequence[str], baseline: str | None = None) -> pd.DataFrame:
    """Mean and std over seeds per variant; with ``baseline``, the delta of each mean vs the baseline's (a
    description: judge a difference by its interval, ``claims.Arm.minus`` or a ``claims.Comparison``)."""
    scalar = df[["variant", *metrics]]
    grouped = scalar.groupby("variant", sort=False)[list(metrics)]
    mean, std, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
    out = pd.DataFrame(index=mean.index)
    out["seeds"] = n[metrics[0]]
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_std"] = mean[m], std[m]
        if baseline is not None:
            if baseline not in mean.index:
                raise KeyError(f"baseline {baseline!r} is not a variant: {list(mean.index)}")
            out[f"{m}_delta"] = mean[m] - mean.loc[baseline, m]
    return out


def format_mean_std(summary: pd.DataFrame, metrics: Sequence[str], scale: float = 100.0, digits: int = 2) -> pd.DataFrame:
    """A display table with ``mean ± std`` strings (times ``scale``, e.g. percent) and deltas."""
    table = pd.DataFrame(index=summary.index)
    table["seeds"] = summary["seeds"]
    for m in metrics:
        mu, sd = summary[f"{m}_mean"] * scale, summary[f"{m}_std"] * scale
        table[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" if not math.isnan(b) else f"{a:.{digits}f}" for a, b in zip(mu, sd)]
        if f"{m}_delta" in summary:
            table[f"Δ {m}"] = [f"{d * scale:+.{digits}f}" for d in summary[f"{m}_delta"]]
    return table


def stat_table(summary: pd.DataFrame, stat: str = "mean", metrics: Sequence[str] | None = None,
               scale: float = 1.0) -> pd.DataFrame:
    """One statistic of ``summarize``'s table as a variant x metric frame, times ``scale``.

    ``stat`` is a column suffix of ``summarize``: "mean", "std" or "delta" (vs its baseline);
    ``metrics`` defaults to every metric that has it. Claims then read ``delta.loc["no BN", "test_acc"]``
    rather than ``summary.loc["no BN", "test_acc_delta"] * 100``; the floats are the same.
    """
    suffix = f"_{stat}"
    if metrics is None:
        metrics = [c[:-len(suffix)] for c in summary.columns if c.endswith(suffix)]
    missing = [m for m in metrics if f"{m}{suffix}" not in summary.columns]
    if not metrics or missing:
        raise KeyError(f"no column {stat!r} for {missing or 'any metric'} in {list(summary.columns)}")
    return pd.DataFrame({m: summary[f"{m}{suffix}"] * scale for m in metrics}, index=summary.index)


def runs_dir(name: str) -> Path:
    """Where a chapter keeps its finished runs: ``$COURSE_RUNS_DIR/<name>`` if set, else ``runs/<name>``
    (relative to the working directory). ``make execute`` and ``make test`` point ``COURSE_RUNS_DIR`` at a fresh
    folder, so committed outputs and tests never reuse results of older code."""
    return Path(os.environ.get("COURSE_RUNS_DIR", "runs")) / name


__all__ = ["format_mean_std", "run_grid", "runs_dir", "stat_table", "summarize"]
