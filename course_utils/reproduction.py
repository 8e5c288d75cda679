"""The reproduction page ``book/reproduction.md``: every claim of ``book/claims.json`` beside what the
chapters measured (their ``book/results/NN.json``, written by ``course_utils.claims.save_claims``).

Run ``python -m course_utils.reproduction`` to write it (``make book`` and ``make execute`` do);
``--check`` only compares and exits 1 when the page is out of date.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from course_utils.claims import VERDICTS, course_root, load_claims
from course_utils.io import atomic_write_text


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
        "chapter writes when it is executed, by `python -m course_utils.reproduction`; it is never edited by hand.",
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

    root = course_root(Path(__file__).resolve().parent) or Path.cwd()
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
            print(f"{args.out} is out of date: run `python -m course_utils.reproduction`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
        atomic_write_text(args.out, text)
    n = sum(1 for ln in text.splitlines() if re.match(r"\| C\d\d ", ln))
    print(f"wrote {args.out} ({n} claim rows)")
    return 0


__all__ = ["main", "render_reproduction"]


if __name__ == "__main__":
    sys.exit(main())
