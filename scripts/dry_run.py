"""Dry-run chapters under a profile's full configuration: ``python scripts/dry_run.py [NN ...] --profile gpu``.

Each chapter runs top to bottom in a fresh kernel with ``COURSE_DRY_RUN=<steps>``: the same models,
shapes, data pipelines, loops, metrics and figures as the real profile, but every ``fit`` takes at most
``--steps`` steps per epoch (one by default) for at most two epochs, every evaluation or inference computes a
few rows of its first batch, and a grid of runs trains its first seed only (``course_utils.runtime``). Nothing is written to the chapters, the runs or the results; a chapter whose
configuration breaks (a shape, a missing data set, a batch that does not fit in memory) fails the run.

Every ``fit`` also records the FLOPs of one step and the number of steps of the real run
(``course_utils.budget``), so the script prints, per chapter: the trainings, their images and training
FLOPs under the profile, the images per second and FLOP rate measured in the dry run, peak memory, and
the projected time of the real run on this device and on a Colab T4 at the assumed sustained rate.

    python scripts/dry_run.py --profile gpu             # every chapter (CI: `make dry-run`)
    python scripts/dry_run.py --profile gpu --check     # ... and fail if course_utils/budgets.json is stale
    python scripts/dry_run.py --profile cpu --update    # record the cpu profile's FLOPs in budgets.json
    python scripts/dry_run.py --device cuda             # on a GPU machine: `make gpu-check` (10 minutes at most)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from course_utils.budget import BUDGETS_FILE, T4_SUSTAINED_FLOPS, format_flops, load_budgets, read_ledger, summarize_ledger  # noqa: E402
from course_utils.io import atomic_write_text  # noqa: E402

MEMORY_CELL = """\
import json as _json, resource as _resource, torch as _torch
print("DRY-RUN-MEMORY " + _json.dumps({
    "cuda_peak_bytes": _torch.cuda.max_memory_allocated() if _torch.cuda.is_available() else None,
    "max_rss_bytes": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def chapters(selected: list[str]) -> list[Path]:
    paths = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
    if selected:
        paths = [p for p in paths if p.name[:2] in selected]
        missing = set(selected) - {p.name[:2] for p in paths}
        if missing:
            raise SystemExit(f"no chapter {sorted(missing)}; chapters are {[p.name[:2] for p in sorted((ROOT / 'chapters').glob('[0-9][0-9]_*.py'))]}")
    return paths


def dry_run(path: Path, profile: str, steps: int, device: str, timeout: int, verbose: bool = False,
            threads: int | None = None) -> dict:
    """Execute one chapter as a dry run and return its summary (raises CellExecutionError if a cell fails).

    ``threads`` caps the kernel's CPU threads (``OMP_NUM_THREADS``), for chapters run side by side."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(MEMORY_CELL))
    scratch = Path(tempfile.mkdtemp(prefix="course-dry-run-"))
    env = {"COURSE_PROFILE": profile, "COURSE_DRY_RUN": str(steps), "COURSE_PROGRESS": "0",
           "COURSE_BUDGET_FILE": str(scratch / "ledger.json"), "COURSE_RUNS_DIR": str(scratch / "runs"),
           "COURSE_RESULTS_DIR": str(scratch / "results"), "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    clock = {}

    def started(cell, cell_index, **_):
        clock["t"] = time.perf_counter()

    def executed(cell, cell_index, **_):
        print(f"   {path.name[:2]} cell {cell_index:3d} {time.perf_counter() - clock['t']:7.1f} s  "
              f"{cell.source.splitlines()[0][:66]}", flush=True)

    hooks = dict(on_cell_start=started, on_cell_executed=executed) if verbose else {}
    # the kernel gets its own environment (this process's is left alone: chapters may run side by side)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   **hooks).execute(env={**os.environ, **env})
    seconds = time.perf_counter() - start
    memory = {}
    for out in nb.cells[-1].get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith("DRY-RUN-MEMORY "):
                memory = json.loads(line.split(" ", 1)[1])
    records = read_ledger(scratch / "ledger.json")
    summary = summarize_ledger(records)
    timed = [r for r in records if r.get("seconds_per_step")]
    images_per_s = (sum(r["images_per_step"] for r in timed) / sum(r["seconds_per_step"] for r in timed)) if timed else None
    return {"chapter": path.name[:2], "seconds": seconds, **summary, "images_per_s": images_per_s, **memory}


def _run_one(path: Path, args, threads: int | None) -> tuple[dict | None, str | None]:
    try:
        return dry_run(path, args.profile, args.steps, args.device, args.timeout, args.verbose, threads), None
    except (CellExecutionError, DeadKernelError) as e:
        return None, str(e).strip().splitlines()[-1]


def report_line(r: dict) -> str:
    rate = r["measured_flops_per_s"]
    here = f"{r['flops'] / rate / 60:8.1f}" if rate else "       -"
    mem = r.get("cuda_peak_bytes") or r.get("max_rss_bytes") or 0
    ips = f"{r['images_per_s']:8.0f}" if r.get("images_per_s") else "       -"
    return (f"{r['chapter']:>2} {r['seconds']:7.0f} {r['trainings']:5d} {r['images']:>12,d} {format_flops(r['flops']):>12} "
            f"{ips} {(rate or 0) / 1e12:8.3f} {mem / 2**30:7.2f} {here} {r['flops'] / T4_SUSTAINED_FLOPS / 60:8.1f}")


HEADER = (" # dry-run fits       images (real)  train FLOPs    img/s  TFLOP/s  mem GiB  min here  min T4\n"
          "   (s)                                                  (dry run, measured)   (projected, real run)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="*", help="chapter numbers (default: all)")
    p.add_argument("--profile", default="gpu", choices=["smoke", "cpu", "gpu"])
    p.add_argument("--steps", type=int, default=1, help="steps per epoch of each training (at most two epochs)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu hides any GPU; cuda needs one")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    p.add_argument("--update", action="store_true", help=f"record the FLOPs in {BUDGETS_FILE.relative_to(ROOT)}")
    p.add_argument("--verbose", action="store_true", help="print the time of every cell")
    p.add_argument("--jobs", type=int, default=1, help="chapters run side by side, each kernel on cpus/jobs threads "
                   "(CPU only; two small kernels on two cores finish sooner than one after the other)")
    p.add_argument("--check", action="store_true", help="fail if the recorded FLOPs differ from the counted ones")
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False); use --device cpu")
    print(f"dry run: profile={args.profile}, {args.steps} steps per epoch, device={args.device}", flush=True)
    print(HEADER, flush=True)
    if args.jobs < 1 or (args.jobs > 1 and args.device == "cuda"):
        raise SystemExit("--jobs must be >= 1, and 1 on a GPU (the chapters would share its memory)")
    budgets, failed, stale = load_budgets(), [], []
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    paths = chapters(args.chapters)
    with ThreadPoolExecutor(args.jobs) as pool:  # each job waits on its own kernel process
        futures = [pool.submit(_run_one, p, args, threads) for p in paths]
        results = [f.result() for f in futures]
    for path, (r, error) in zip(paths, results):
        if error is not None:
            failed.append(path.name)
            print(f"{path.name[:2]} FAILED: {error}", flush=True)
            continue
        print(report_line(r), flush=True)
        entry = budgets.setdefault(r["chapter"], {})
        recorded = entry.get("flops", {}).get(args.profile)
        if recorded != r["flops"]:
            stale.append(f"{r['chapter']}: recorded {recorded}, counted {r['flops']}")
        entry.setdefault("flops", {})[args.profile] = r["flops"]
    if args.update:
        atomic_write_text(BUDGETS_FILE, json.dumps(dict(sorted(budgets.items())), indent=2) + "\n")
        print(f"wrote {BUDGETS_FILE.relative_to(ROOT)}")
    if failed:
        print(f"{len(failed)} chapter(s) failed their dry run: {', '.join(failed)}")
        return 1
    if args.check and stale and not args.update:
        print("course_utils/budgets.json is stale (" + "; ".join(stale) + f"): run python scripts/dry_run.py "
              f"--profile {args.profile} --update and commit it.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
