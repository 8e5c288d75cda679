"""The reproduction page ``book/reproduction.md``: every claim of ``book/claims.json`` beside what the
chapters measured (their ``book/results/NN.json``, written by ``course_utils.claims.save_claims``), with a
forest plot per chapter (``book/figures/forest_NN.png``, drawn by ``viz.forest_plot``).

Run ``python -m course_utils.reproduction`` to write them (``make book`` and ``make execute`` do);
``--check`` only compares the page with the files and exits 1 when it is out of date.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from course_utils.claims import FORMAT, Comparison, course_root, forest_rows, load_claims
from course_utils.intervals import VERDICTS
from course_utils.io import atomic_write

UNMEASURED = "not yet measured"

PROTOCOL = """## How a claim is judged

Each claim is one or more **comparisons** of two arms, *a* and *b* (say max-pooling and a stride-2
convolution), each trained with several seeds. The number we report is the mean difference *a − b* over
seeds and its **95% confidence interval**: the range of true differences that these runs cannot rule out.
If we repeated the whole experiment many times, 95% of intervals built this way would hold the true
difference. When both arms ran with the same seeds (same initialisation and data order), the interval is a
t interval on the per-seed differences (*paired*); otherwise a Welch interval. Both come from `scipy.stats`.

Before anything runs, each comparison declares its **test**: *a is greater*, *a is less*, or *a and b are
equivalent* within a margin written in the claim (for claims that something "does not matter"). Then:

- **supported**: the interval lies entirely on the claimed side of 0 (for equivalence: inside ±margin);
- **contradicted**: it lies entirely on the other side (for equivalence: entirely outside the margin);
- **inconclusive**: anything else;
- **not testable here**: the set-up cannot show the claim (the reason is given);
- **not judged**: an arm has fewer than 3 values. It is shown, never judged: with one run there is no
  spread at all, and with two the interval rests on a single degree of freedom and is too wide to say
  anything. Three seeds is the least that gives an interval worth reading.

A claim with several comparisons is supported when all are, contradicted when any is, inconclusive
otherwise. **Inconclusive says only that these runs cannot tell**: the interval reaches both sides. It
does not say that the effect is absent (that is what an equivalence test with a margin is for), nor that
the source was wrong; more seeds or a larger budget might decide it. Apart from the verdict, a **size
label** compares our interval with the source's number, read in the source's direction: *similar* when
the source's effect lies inside our interval, *smaller* or *larger* when the whole interval lies below or
above it. The sources mostly report single runs at other scales; a budget (optimizer steps, batch size,
epochs) is given with every claim because a verdict can depend on it.

Every value behind this page is stored in `book/results/NN.json`; `python -m course_utils.claims --check`
recomputes each interval and verdict from them (and `make test` runs it).
"""


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _toc_docs(root: Path) -> set[str]:
    toc = root / "_toc.yml"
    return set(re.findall(r"file:\s*(\S+)", toc.read_text())) if toc.is_file() else set()


def _shared_claims(path: Path) -> dict[str, int]:
    """{id: chapter} of a claim list written as a markdown table (``| C04 | 2 | ... |``)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\|\s*(C\d\d)\s*\|\s*(\d+)\s*\|", path.read_text(), re.M)}


def _budget(b) -> str:
    if not b:
        return "budget not given"
    return f"{b['optimizer_steps']} optimizer steps, batch {b['batch_size']}, {b['epochs']:g} epochs"


def _n(n) -> str:
    return f"{n} pairs" if isinstance(n, int) else f"{n[0]} + {n[1]}"


def _comparison_row(c: dict, shared_metric: bool = False) -> str:
    ci = c["ci95"]
    ours = f"{c['diff']:+.3g} [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else f"{c['diff']:+.3g} (no interval)"
    test = (f"equivalent ±{c['margin']:g}" if c["test"] == "equivalent"
            else f"not testable: {c['reason']}" if c["test"] == "not_testable" else c["test"])
    source = "—" if c.get("source_effect") is None else f"{c['source_effect']:+.3g}"
    metric = f" ({_cell(c['metric'])})" if c.get("metric") and not shared_metric else ""
    return (f"| {_cell(c['label'])}{metric} | {ours} | {_n(c['n'])} | {_cell(test)} | {source} | {c['size'] or '—'} "
            f"| {c['verdict']} |")


def _comparison_table(comparisons: list[dict]) -> list[str]:
    """The comparisons of one claim as a table narrow enough for the page (the metric above it when shared)."""
    metrics = {c.get("metric", "") for c in comparisons}
    shared = len(metrics) == 1 and "" not in metrics
    head = [f"Metric: {_cell(metrics.pop())}.", ""] if shared else []
    return [*head, "| a − b | ours [95% CI] | n | test | source | size | verdict |", "|---|---|---|---|---|---|---|",
            *[_comparison_row(c, shared) for c in comparisons]]


def _check_section(label: str, chapter_files: list[Path], cid: str) -> None:
    if chapter_files and not any(f"({label})=" in f.read_text(encoding="utf-8") for f in chapter_files):
        raise ValueError(f"{cid} links to section label {label!r}, which {chapter_files[0].name} does not define: "
                         f"add a markdown line `({label})=` just above the section's heading.")


def chapter_rows(results: Path) -> dict[int, list[dict]]:
    """``{chapter: viz.forest_plot rows}`` of every measured (current-format) claim in ``results``."""
    out: dict[int, list[dict]] = {}
    for row in load_claims(results) if Path(results).is_dir() else []:
        if row["format"] >= FORMAT:
            comps = [Comparison.from_json(c) for c in row["comparisons"]]
            out.setdefault(int(row["chapter"]), []).extend(
                {**r, "label": f"{row['id']} {r['label']}"} for r in forest_rows(comps))
    return dict(sorted(out.items()))


def render_reproduction(claims_file: Path, results: Path, root: Path) -> str:
    """The text of ``book/reproduction.md``: per chapter a forest plot and every claim of ``claims_file``."""
    spec = json.loads(Path(claims_file).read_text(encoding="utf-8"))
    listed = {c["id"]: c for c in spec["claims"]}
    measured: dict[str, list[dict]] = {}
    for row in load_claims(results) if Path(results).is_dir() else []:
        if row["id"] not in listed:
            raise ValueError(f"{results}/{row['chapter']}.json has claim {row['id']}, which {claims_file} does not "
                             "list: add it there (with the course's wording) or fix the id.")
        measured.setdefault(row["id"], []).append(row)
    counts = {v: 0 for v in (*VERDICTS, UNMEASURED)}
    for cid in listed:
        for r in measured.get(cid, [{"format": 0}]):
            counts[r["verdict"] if r["format"] >= FORMAT else UNMEASURED] += 1
    figures = chapter_rows(results)
    docs = _toc_docs(root)
    lines = [
        "# Reproduction: the claims, measured",
        "",
        "The chapters re-run experiments from the course reports they follow. Each report makes claims",
        "(\"max-pooling beats a strided convolution\", \"group norm does not care about the batch size\"),",
        "mostly from single runs on other data sets and at other scales. Below, every claim the course tests",
        "is restated with the source's number, what the course measured (the mean difference over seeds and",
        "its 95% interval, n, the training budget) and a verdict; the protocol is explained at the end. A",
        "claim that does not reproduce here is a finding, not a failure: the chapter discusses why it may",
        "differ. This page is generated from the result files `book/results/NN.json` by",
        "`python -m course_utils.reproduction`; it is never edited by hand.",
        "",
        "| verdict | claims |",
        "|---|---|",
        *[f"| {v} | {n} |" for v, n in counts.items()],
        "",
    ]
    for ch in sorted({c["chapter"] for c in spec["claims"]}):
        lines += [f"## Chapter {ch}: {spec['chapters'].get(str(ch), f'Chapter {ch}')}", ""]
        doc = next((d for d in sorted(docs) if re.fullmatch(rf"chapters/{ch:02d}_\w+", d)), None)
        files = [p for p in (root / f"{doc}.py", root / f"{doc}.ipynb") if p.is_file()] if doc else []
        if doc:
            lines += [f"Measured in {{doc}}`chapter {ch} <../{doc}>`.", ""]
        if ch in figures:
            lines += [f"![Chapter {ch}: each comparison's 95% interval (colour: verdict) beside the source's effect "
                      f"(×)](figures/forest_{ch:02d}.png)", ""]
        for c in (c for c in spec["claims"] if c["chapter"] == ch):
            rows = [r for r in measured.get(c["id"], []) if r["format"] >= FORMAT]
            if not rows:
                old = measured.get(c["id"])
                why = (f"chapter {int(old[0]['chapter'])} not yet re-executed with per-seed values" if old
                       else f"not measured by chapter {ch}")
                lines += [f"**{c['id']}** — {_cell(c['claim'])} *{UNMEASURED}* ({why}).", ""]
                continue
            for r in rows:
                link = ""
                if r.get("section"):
                    _check_section(r["section"], files, c["id"])
                    link = f" ({{ref}}`the experiment <{r['section']}>`)"
                where = "" if int(r["chapter"]) == ch else f" (measured in chapter {int(r['chapter'])})"
                lines += [f"**{c['id']}** — {_cell(c['claim'])} Verdict: **{r['verdict']}**{link}{where}.", "",
                          f"Source: {_cell(r['source']) or 'no number'}. Budget: {_budget(r['budget'])}; "
                          f"profile {r['profile']}, {r['date']}." + (f" *{_cell(r['note'])}*" if r.get("note") else ""),
                          "",
                          *_comparison_table(r["comparisons"]), ""]
    return "\n".join(lines + [PROTOCOL])


def write_figures(results: Path, folder: Path) -> list[Path]:
    """Draw ``forest_NN.png`` in ``folder`` for every chapter with measured claims; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils.viz import forest_plot

    paths = []
    for ch, rows in chapter_rows(results).items():
        fig = forest_plot(rows, xlabel="a − b (units of each claim's metric)", title=f"Chapter {ch}")
        path = Path(folder) / f"forest_{ch:02d}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    """Write (or with ``--check`` only compare) ``book/reproduction.md`` and its forest plots."""
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
    figures = args.out.parent / "figures"
    if args.check:
        missing = [f"forest_{ch:02d}.png" for ch in chapter_rows(args.results) if not (figures / f"forest_{ch:02d}.png").is_file()]
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text or missing:
            print(f"{args.out} is out of date{f' (missing {missing})' if missing else ''}: "
                  "run `python -m course_utils.reproduction`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    drawn = write_figures(args.results, figures)
    n = len(re.findall(r"^\*\*C\d\d\*\*", text, re.M))
    print(f"wrote {args.out} ({n} claims, {len(drawn)} forest plots)")
    return 0


__all__ = ["PROTOCOL", "UNMEASURED", "chapter_rows", "render_reproduction", "write_figures"]


if __name__ == "__main__":
    sys.exit(main())
