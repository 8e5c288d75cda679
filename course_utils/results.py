"""The claims a chapter puts to the test, what it measured, and the JSON file the reproduction page reads.

A chapter ends its experiments with::

    from course_utils.results import Claim, judge, save_claims
    claims = [
        Claim("C04", "max-pool beats stride-2 down-sampling",
              measured=f"stride - maxpool = {d:+.2f} ± {noise:.2f} test acc (3 seeds)",
              verdict=judge(d, noise, expected="negative")),
    ]
    save_claims("02", claims)

``save_claims`` prints one line per claim (so every number in the JSON is also in the notebook's
outputs, which a test checks) and writes ``<results dir>/<chapter>.json`` atomically. The results dir is
``$COURSE_RESULTS_DIR`` if set; else ``book/results`` of the course checkout when the profile is ``cpu`` or
``gpu``; smoke runs write under ``$COURSE_RUNS_DIR`` so a test run never overwrites the book's results.
``book/reproduction.md`` is generated from those files and the claim list ``book/claims.json`` by
``python -m course_utils.results`` (``make book`` and ``make execute`` run it; ``--check`` only compares).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_utils.io import atomic_write_text
from course_utils.runtime import get_profile

VERDICTS = ("confirmed", "not reproduced", "inside the noise")


@dataclass(frozen=True)
class Claim:
    """One claim of ``shared/CLAIMS.md`` (``id`` like ``"C04"``) as the chapter tested it.

    ``measured`` is the human-readable measurement (mean ± std, seeds); ``verdict`` one of ``VERDICTS``;
    ``note`` an optional sentence on why the result may differ from the seed's.
    """

    id: str
    claim: str
    measured: str
    verdict: str
    note: str = ""
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (len(self.id) == 3 and self.id[0] == "C" and self.id[1:].isdigit()):
            raise ValueError(f"Claim id must look like 'C04' (see shared/CLAIMS.md), got {self.id!r}.")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")
        if not self.measured.strip():
            raise ValueError(f"Claim {self.id}: 'measured' is empty; say what was measured (mean ± std, seeds).")


def judge(effect: float, noise: float, expected: str = "positive") -> str:
    """Verdict for a measured ``effect`` (e.g. a difference of means) against its ``noise``.

    ``|effect| <= noise`` is "inside the noise"; otherwise "confirmed" when the sign is the ``expected``
    one ("positive" or "negative"), else "not reproduced". ``expected="none"`` means the claim is that
    there is *no* effect: then inside the noise confirms it and anything beyond refutes it. A NaN
    ``noise`` (one seed, so no spread) always gives "inside the noise".
    """
    if expected not in ("positive", "negative", "none"):
        raise ValueError(f"expected must be 'positive', 'negative' or 'none', got {expected!r}.")
    if not math.isfinite(effect) or noise < 0 or math.isinf(noise):
        raise ValueError(f"effect must be finite and noise finite and >= 0 (NaN for one seed), got {effect}, {noise}.")
    if math.isnan(noise):  # one seed: no spread, so no effect can be told apart from noise
        return "inside the noise"
    inside = abs(effect) <= noise
    if expected == "none":
        return "confirmed" if inside else "not reproduced"
    if inside:
        return "inside the noise"
    return "confirmed" if (effect > 0) == (expected == "positive") else "not reproduced"


def _course_root(start: Path) -> Path | None:
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
    root = _course_root(Path.cwd().resolve())
    return root / "book" / "results" if root is not None else Path("results")


def save_claims(chapter: str, claims: list[Claim], profile: str | None = None, path: Path | None = None) -> Path:
    """Print each claim with its verdict and write them to ``<results dir>/<chapter>.json`` atomically."""
    if not claims:
        raise ValueError("save_claims needs at least one Claim.")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Each claim may appear once per chapter; got {ids}.")
    profile = get_profile(profile)
    for c in claims:
        print(f"{c.id} [{c.verdict}] {c.claim}: {c.measured}")
    target = Path(path) if path is not None else results_dir(profile) / f"{chapter}.json"
    payload = {
        "chapter": chapter,
        "profile": profile,
        "date": _dt.date.today().isoformat(),
        "claims": [asdict(c) for c in claims],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return target


def load_claims(folder: Path) -> list[dict]:
    """All claims of every ``<chapter>.json`` in ``folder``, each with its chapter and profile, sorted by id."""
    rows = []
    for file in sorted(Path(folder).glob("*.json")):
        data = json.loads(file.read_text())
        for c in data["claims"]:
            rows.append({**c, "chapter": data["chapter"], "profile": data["profile"], "date": data["date"]})
    return sorted(rows, key=lambda r: r["id"])


# ---------------------------------------------------------------------------------------------------
# The reproduction page


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _toc_docs(root: Path) -> set[str]:
    toc = root / "_toc.yml"
    return set(re.findall(r"file:\s*(\S+)", toc.read_text())) if toc.is_file() else set()


def _shared_claims(path: Path) -> dict[str, int]:
    """{id: chapter} of a claim list written as a markdown table (``| C04 | 2 | ... |``)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\|\s*(C\d\d)\s*\|\s*(\d+)\s*\|", path.read_text(), re.M)}


def render_reproduction(claims_file: Path, results: Path, root: Path) -> str:
    """The text of ``book/reproduction.md``: one table per chapter, every claim of ``claims_file``."""
    spec = json.loads(Path(claims_file).read_text(encoding="utf-8"))
    listed = {c["id"]: c for c in spec["claims"]}
    measured: dict[str, list[dict]] = {}
    executed: set[int] = set()
    for row in load_claims(results) if Path(results).is_dir() else []:
        if row["id"] not in listed:
            raise ValueError(f"{results}/{row['chapter']}.json has claim {row['id']}, which {claims_file} does not "
                             "list: add it there (with the course's wording) or fix the id.")
        measured.setdefault(row["id"], []).append(row)
    for file in sorted(Path(results).glob("*.json")) if Path(results).is_dir() else []:
        executed.add(int(json.loads(file.read_text())["chapter"]))
    counts = {v: 0 for v in (*VERDICTS, "not yet measured")}
    for cid in listed:
        for r in measured.get(cid, [{"verdict": "not yet measured"}]):
            counts[r["verdict"]] += 1
    docs = _toc_docs(root)
    lines = [
        "# Reproduction: the claims, measured",
        "",
        "The chapters re-run experiments from the course reports they follow. Each report makes claims",
        "(\"max-pooling beats a strided convolution\", \"group norm does not care about the batch size\"),",
        "mostly from single runs on other data sets and at other scales. Below, every claim the course tests",
        "is restated beside what the course measured when the chapter was executed (mean ± standard",
        "deviation over seeds, and the profile of the run) and a verdict:",
        "",
        "- **confirmed**: the effect is larger than the spread across seeds and has the claimed sign",
        "  (for a claim that something does *not* matter: the difference stays within that spread);",
        "- **not reproduced**: the effect is larger than the spread and goes the other way (or a difference",
        "  that should not exist is there);",
        "- **inside the noise**: the difference is smaller than the spread across seeds, so these runs",
        "  cannot tell.",
        "",
        "A claim that does not reproduce here is a finding, not a failure: the chapter discusses why it may",
        "differ. This page is generated from the small result files `book/results/NN.json` that each",
        "chapter writes when it is executed, by `python -m course_utils.results`; it is never edited by hand.",
        "",
        "| verdict | claims |",
        "|---|---|",
        *[f"| {v} | {n} |" for v, n in counts.items()],
        "",
    ]
    chapters = sorted({c["chapter"] for c in spec["claims"]})
    for ch in chapters:
        title = spec["chapters"].get(str(ch), f"Chapter {ch}")
        lines += [f"## Chapter {ch}: {title}", ""]
        doc = next((d for d in sorted(docs) if re.fullmatch(rf"chapters/{ch:02d}_\w+", d)), None)
        if doc:
            lines += [f"Measured in {{doc}}`chapter {ch} <../{doc}>`.", ""]
        lines += ["| id | claim | what the course measured | profile | verdict |", "|---|---|---|---|---|"]
        for c in (c for c in spec["claims"] if c["chapter"] == ch):
            rows = measured.get(c["id"])
            if not rows:
                why = (f"not measured by chapter {ch}" if ch in executed else f"chapter {ch} not executed")
                lines.append(f"| {c['id']} | {_cell(c['claim'])} | not yet measured ({why}) | | not yet measured |")
                continue
            for r in rows:
                what = _cell(r["measured"]) + (f" — *{_cell(r['note'])}*" if r.get("note") else "")
                where = "" if int(r["chapter"]) == ch else f" (chapter {int(r['chapter'])})"
                lines.append(f"| {c['id']} | {_cell(c['claim'])} | {what}{where} | {r['profile']}, {r['date']} "
                             f"| **{r['verdict']}** |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    root = _course_root(Path(__file__).resolve().parent) or Path.cwd()
    p = argparse.ArgumentParser(description="Write book/reproduction.md from book/results/*.json and book/claims.json.")
    p.add_argument("--results", type=Path, default=root / "book" / "results")
    p.add_argument("--claims", type=Path, default=root / "book" / "claims.json")
    p.add_argument("--out", type=Path, default=root / "book" / "reproduction.md")
    p.add_argument("--shared", type=Path, default=root.parent / "shared" / "CLAIMS.md",
                   help="the claim list to compare ids and chapters with, when present")
    p.add_argument("--check", action="store_true", help="only check that --out is up to date (exit 1 if not)")
    args = p.parse_args(argv)
    try:
        text = render_reproduction(args.claims, args.results, root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.shared.is_file():
        ours = {c["id"]: c["chapter"] for c in json.loads(args.claims.read_text(encoding="utf-8"))["claims"]}
        theirs = _shared_claims(args.shared)
        if theirs and theirs != ours:
            diff = sorted(set(theirs.items()) ^ set(ours.items()))
            print(f"warning: {args.claims} and {args.shared} differ in ids or chapters: {diff}", file=sys.stderr)
    if args.check:
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is out of date: run `python -m course_utils.results`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
        atomic_write_text(args.out, text)
    n = sum(1 for ln in text.splitlines() if re.match(r"\| C\d\d ", ln))
    print(f"wrote {args.out} ({n} claim rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
