"""The claims a chapter puts to the test, judged by one rule, and the result file that carries the data.

A claim is one or more comparisons of two arms, each arm with its per-seed values; each comparison
declares its test before anything runs (``greater``, ``less``, ``equivalent`` with a margin, or
``not_testable`` with a reason) and gets its verdict from the 95% interval of the mean difference a − b
(``course_utils.intervals``). A chapter ends its experiments with::

    maxpool = Arm.from_rows(rows, "maxpool", "test_acc")   # rows from run_grid: variant, seed, metric
    stride = Arm.from_rows(rows, "stride", "test_acc")
    save_claims("02", [Claim("C04", "max-pool beats stride-2 down-sampling", source="−1.15 (Table 1)",
                             budget=Budget(steps=1200, batch_size=128, epochs=10), section="sec-c04",
                             comparisons=[Comparison(maxpool, stride, "greater", paired=True, source_effect=1.15)])])

``save_claims`` prints one line per comparison and writes ``<results dir>/<chapter>.json`` atomically
with every value, so ``python -m course_utils.claims --check [folder]`` can recompute each interval and
verdict. The results dir is ``$COURSE_RESULTS_DIR`` if set; else ``book/results`` of the course checkout
when the profile is ``cpu`` or ``gpu``; smoke runs write under ``$COURSE_RUNS_DIR`` so a test run never
overwrites the book's results. ``python -m course_utils.reproduction`` renders ``book/reproduction.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from course_utils.intervals import MIN_VALUES, TESTS, VERDICTS, combine, decide, interval, paired_values, size_label
from course_utils.io import atomic_write_text
from course_utils.runtime import get_profile

FORMAT = 2  # result files without "format" (strings only, before issue 17) are "not yet measured"


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: its per-seed ``values`` and, for pairing, the ``seeds`` they came from."""

    label: str
    values: tuple
    seeds: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
            if len(self.seeds) != len(self.values):
                raise ValueError(f"Arm {self.label!r}: {len(self.values)} values but {len(self.seeds)} seeds.")
        if not self.values or not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"Arm {self.label!r} needs at least one finite value, got {list(self.values)}.")

    @classmethod
    def from_rows(cls, rows, variant: str, metric: str, label: str | None = None, scale: float = 1.0) -> "Arm":
        """The arm of ``variant`` from ``run_grid`` rows (DataFrame or dicts with variant, seed, metric), by seed;
        values times ``scale`` (100 for accuracies in points). Runs whose ``metric`` is missing or NaN (a
        diverged run) are left out, so the arm may have fewer seeds than the grid."""
        records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
        mine = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
        if not mine:
            raise ValueError(f"no rows of variant {variant!r}; variants: {sorted({r['variant'] for r in records})}")
        mine = [r for r in mine if r.get(metric) is not None and not math.isnan(r[metric])]
        return cls(label or variant, [r[metric] * scale for r in mine], [r["seed"] for r in mine])

    def minus(self, other: "Arm", paired: bool | None = None) -> tuple[float, tuple[float, float] | None]:
        """``(mean of self − mean of other, its 95% interval)``, for a descriptive row that declares no test.

        ``paired=None`` pairs by seed when both arms have the same seeds. The interval is ``None`` when an
        arm has fewer than 3 values: shown, never given an interval (as a claim would not be judged)."""
        if paired is None:
            paired = self.seeds is not None and other.seeds is not None and sorted(self.seeds) == sorted(other.seeds)
        diff, ci = interval(self.values, other.values, paired, self.seeds, other.seeds)
        return diff, ci if min(len(self.values), len(other.values)) >= MIN_VALUES else None

    def to_json(self) -> dict:
        """``{"label", "values", "seeds"}``."""
        return {"label": self.label, "values": list(self.values),
                "seeds": None if self.seeds is None else list(self.seeds)}


@dataclass(frozen=True)
class Budget:
    """The training budget of a claim's runs: optimizer steps, batch size, epochs."""

    steps: int
    batch_size: int
    epochs: float

    @classmethod
    def of_epochs(cls, n_images: int, batch_size: int, epochs: float) -> "Budget":
        """The budget of ``epochs`` passes over ``n_images`` in batches of ``batch_size``, as the course's loaders
        count them: the last incomplete batch is dropped unless it is the only one."""
        per_epoch = n_images // batch_size if n_images > batch_size else 1
        return cls(int(per_epoch * epochs), batch_size, epochs)

    def to_json(self) -> dict:
        """``{"optimizer_steps", "batch_size", "epochs"}``."""
        return {"optimizer_steps": self.steps, "batch_size": self.batch_size, "epochs": self.epochs}


@dataclass(frozen=True)
class Comparison:
    """The mean difference ``a − b`` over seeds, its 95% interval, and the verdict of the declared ``test``.

    ``source_effect`` is the source's effect on the same a − b scale (None when it reports none);
    ``margin`` (``equivalent`` only) and ``reason`` (``not_testable`` only) are written before running.
    """

    a: Arm
    b: Arm
    test: str
    margin: float | None = None
    paired: bool = False
    source_effect: float | None = None
    reason: str = ""
    label: str = ""
    metric: str = ""

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {self.test!r}.")
        if self.test == "equivalent" and (self.margin is None or not self.margin > 0):
            raise ValueError(f"an 'equivalent' comparison needs margin > 0 (in the metric's units), got {self.margin!r}.")
        if self.test != "equivalent" and self.margin is not None:
            raise ValueError(f"margin is for 'equivalent' tests only, not {self.test!r}.")
        if self.test == "not_testable" and not self.reason.strip():
            raise ValueError("a 'not_testable' comparison needs the reason the set-up cannot show it.")
        if self.paired:
            paired_values(self.a.values, self.b.values, self.a.seeds, self.b.seeds)  # raises when seeds differ
        if not self.label:
            object.__setattr__(self, "label", f"{self.a.label} − {self.b.label}")

    @property
    def n(self) -> int | list[int]:
        """Pairs when paired, else ``[n_a, n_b]``."""
        return len(self.a.values) if self.paired else [len(self.a.values), len(self.b.values)]

    @property
    def diff(self) -> float:
        """Mean difference a − b (over pairs when paired)."""
        return interval(self.a.values, self.b.values, self.paired, self.a.seeds, self.b.seeds)[0]

    @property
    def ci95(self) -> tuple[float, float] | None:
        """The 95% interval of a − b, or None when an arm has fewer than 3 values."""
        if min(len(self.a.values), len(self.b.values)) < MIN_VALUES:
            return None
        return interval(self.a.values, self.b.values, self.paired, self.a.seeds, self.b.seeds)[1]

    @property
    def verdict(self) -> str:
        """supported / contradicted / inconclusive / not testable here / not judged."""
        return decide(self.ci95, self.test, self.margin)

    @property
    def size(self) -> str | None:
        """smaller / similar / larger than the source's effect (see ``intervals.size_label``), or None."""
        return size_label(self.ci95, self.source_effect)

    def to_json(self) -> dict:
        """The comparison with its arms' values, interval, verdict and size label."""
        ci = self.ci95
        return {"label": self.label, "metric": self.metric, "a": self.a.to_json(), "b": self.b.to_json(),
                "paired": self.paired, "test": self.test, "margin": self.margin, "reason": self.reason,
                "source_effect": self.source_effect, "n": self.n, "diff": self.diff,
                "ci95": None if ci is None else list(ci), "verdict": self.verdict, "size": self.size}

    @classmethod
    def from_json(cls, d: Mapping) -> "Comparison":
        """The comparison back from ``to_json`` (the computed fields are recomputed, not read)."""
        arm = lambda x: Arm(x["label"], x["values"], x.get("seeds"))  # noqa: E731
        return cls(arm(d["a"]), arm(d["b"]), d["test"], d.get("margin"), d["paired"], d.get("source_effect"),
                   d.get("reason", ""), d.get("label", ""), d.get("metric", ""))


@dataclass(frozen=True)
class Claim:
    """A claim of ``shared/CLAIMS.md`` (``id`` like ``"C04"``): its comparisons, the source's number, the budget."""

    id: str
    text: str
    comparisons: Sequence[Comparison]
    source: str = ""
    budget: Budget | None = None
    section: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (len(self.id) == 3 and self.id[0] == "C" and self.id[1:].isdigit()):
            raise ValueError(f"Claim id must look like 'C04' (see shared/CLAIMS.md), got {self.id!r}.")
        object.__setattr__(self, "comparisons", tuple(self.comparisons))
        if not self.comparisons or not all(isinstance(c, Comparison) for c in self.comparisons):
            raise ValueError(f"Claim {self.id} needs one or more Comparison objects.")

    @property
    def verdict(self) -> str:
        """The comparisons' verdicts combined (``intervals.combine``)."""
        return combine([c.verdict for c in self.comparisons])

    def to_json(self) -> dict:
        """The claim as stored in ``NN.json``."""
        return {"id": self.id, "text": self.text, "source": self.source,
                "budget": None if self.budget is None else self.budget.to_json(), "section": self.section,
                "note": self.note, "extra": self.extra, "comparisons": [c.to_json() for c in self.comparisons],
                "verdict": self.verdict}


def describe(c: Comparison) -> str:
    """One line for a comparison: a − b, interval, n, test and verdict (what ``save_claims`` prints)."""
    ci = c.ci95
    shown = f"[{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "no interval"
    test = f"equivalent ±{c.margin:g}" if c.test == "equivalent" else c.test
    size = f", {c.size} {'to' if c.size == 'similar' else 'than'} the source's {c.source_effect:+.3g}" if c.size else ""
    n = c.n if isinstance(c.n, int) else f"{c.n[0]}+{c.n[1]}"
    return f"{c.label}: {c.diff:+.3g} {shown} (n={n}, {test}) -> {c.verdict}{size}"


def forest_rows(items) -> list[dict]:
    """Rows for ``viz.forest_plot`` from claims and/or comparisons (label, diff, ci95, source, margin, verdict)."""
    rows = []
    for item in items:
        for c in item.comparisons if isinstance(item, Claim) else [item]:
            label = f"{item.id} {c.label}" if isinstance(item, Claim) else c.label
            rows.append({"label": label, "diff": c.diff, "ci95": c.ci95, "source": c.source_effect,
                         "margin": c.margin, "verdict": c.verdict})
    return rows


def course_root(start: Path) -> Path | None:
    """The course checkout holding ``start`` (the first folder up with ``_config.yml`` and ``book/``), or None."""
    for folder in [start, *start.parents]:
        if (folder / "_config.yml").is_file() and (folder / "book").is_dir():
            return folder
    return None


def results_dir(profile: str | None = None) -> Path:
    """Where ``save_claims`` writes (see the module docstring)."""
    if os.environ.get("COURSE_RESULTS_DIR"):
        return Path(os.environ["COURSE_RESULTS_DIR"])
    if get_profile(profile) == "smoke":
        return Path(os.environ.get("COURSE_RUNS_DIR", "runs")) / "results"
    root = course_root(Path.cwd().resolve())
    return root / "book" / "results" if root is not None else Path("results")


def save_claims(chapter: str, claims: Sequence[Claim], profile: str | None = None, path: Path | None = None) -> Path:
    """Print each claim and comparison with its verdict; write them to ``<results dir>/<chapter>.json`` atomically."""
    if not claims:
        raise ValueError("save_claims needs at least one Claim.")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Each claim may appear once per chapter; got {ids}.")
    profile = get_profile(profile)
    for claim in claims:
        print(f"{claim.id} [{claim.verdict}] {claim.text}")
        for c in claim.comparisons:
            print(f"    {describe(c)}")
    target = Path(path) if path is not None else results_dir(profile) / f"{chapter}.json"
    payload = {"chapter": chapter, "profile": profile, "date": _dt.date.today().isoformat(), "format": FORMAT,
               "claims": [c.to_json() for c in claims]}
    atomic_write_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return target


def load_claims(folder: Path) -> list[dict]:
    """All claims of every ``<chapter>.json`` in ``folder``, each with chapter, profile, date and format, by id."""
    rows = []
    for file in sorted(Path(folder).glob("*.json")):
        data = json.loads(file.read_text(encoding="utf-8"))
        for c in data["claims"]:
            rows.append({**c, "chapter": data["chapter"], "profile": data["profile"], "date": data["date"],
                         "format": data.get("format", 1)})
    return sorted(rows, key=lambda r: r["id"])


def _close(x, y) -> bool:
    """Equal up to float rounding: two numbers, two lists of numbers, or two Nones."""
    if x is None or y is None:
        return x is None and y is None
    x, y = ([x], [y]) if isinstance(x, (int, float)) and isinstance(y, (int, float)) else (x, y)
    try:
        return len(x) == len(y) and all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12) for u, v in zip(x, y))
    except TypeError:
        return False


def check_results(folder: Path) -> tuple[list[str], list[str]]:
    """``(disagreements, not yet measured)``: every stored interval and verdict recomputed from the values."""
    problems, old = [], []
    for file in sorted(Path(folder).glob("*.json")):
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("format", 1) < FORMAT:
            old += [f"{file.name} {c['id']}" for c in data["claims"]]
            continue
        for c in data["claims"]:
            where = f"{file.name} {c['id']}"
            verdicts = []
            for i, stored in enumerate(c["comparisons"]):
                try:
                    comp = Comparison.from_json(stored)
                except (ValueError, KeyError, TypeError) as e:
                    problems.append(f"{where} comparison {i + 1}: cannot be rebuilt ({e})")
                    continue
                fresh = comp.to_json()
                verdicts.append(fresh["verdict"])
                for key in ("n", "diff", "ci95", "verdict", "size"):
                    kept, now = stored.get(key), fresh[key]
                    if not (_close(kept, now) if key in ("diff", "ci95") else kept == now):
                        problems.append(f"{where} comparison {i + 1} ({comp.label}): stored {key} {kept!r}, "
                                        f"recomputed {now!r}")
            if len(verdicts) == len(c["comparisons"]) and verdicts and c.get("verdict") != combine(verdicts):
                problems.append(f"{where}: stored verdict {c.get('verdict')!r}, recomputed {combine(verdicts)!r}")
    return problems, old


def main(argv=None) -> int:
    """``python -m course_utils.claims --check [folder]``: exit 1 naming each stored number that disagrees."""
    import argparse

    root = course_root(Path(__file__).resolve().parent) or Path.cwd()
    p = argparse.ArgumentParser(description="Recompute every interval and verdict of the result files.")
    p.add_argument("--check", action="store_true", help="recompute and compare (the only action)")
    p.add_argument("folder", nargs="?", type=Path, default=root / "book" / "results")
    args = p.parse_args(argv)
    if not args.check:
        p.error("nothing to do: pass --check")
    problems, old = check_results(args.folder)
    for line in old:
        print(f"not yet measured (old format, chapter not re-executed): {line}")
    for line in problems:
        print(f"disagrees: {line}", file=sys.stderr)
    n = len(list(args.folder.glob("*.json")))
    print(f"{args.folder}: {n} files, {len(problems)} disagreements, {len(old)} claims not yet measured")
    return 1 if problems else 0


__all__ = ["FORMAT", "Arm", "Budget", "Claim", "Comparison", "check_results", "course_root", "describe", "forest_rows",
           "load_claims", "results_dir", "save_claims"]

if __name__ == "__main__":
    sys.exit(main())
