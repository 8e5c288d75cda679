"""Write the student copies of the chapters: ``python scripts/make_student.py`` (``make student``).

For every ``chapters/NN_*.ipynb`` it writes ``_build/student/NN_*.ipynb`` where

- every code cell tagged ``solution`` becomes an exercise stub: the exercise's statement as comments
  (taken from the chapter's numbered "Exercises" list) and ``raise NotImplementedError("Exercise N: ...")``;
  the cell is tagged ``exercise`` instead (and no longer ``hide-input``);
- every ``{admonition}`` block whose title contains "Solution" and whose class is ``dropdown`` (the
  written solutions) is *replaced* by a short "Your answers" note naming the exercises, so the student
  has a cell to write in; the cell is tagged ``answer`` instead of ``solution``;
- every output and execution count is cleared;
- everything else (text, code, checked cells, tags, the setup cell) is left as it is.

The written solutions stay in the rendered book, collapsed; the student copy is for working without
them. A chapter without any solution is an error: every chapter must have exercises with solutions.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from course_utils.io import atomic_write  # noqa: E402

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
ANSWER_TAG = "answer"

_HEADING = re.compile(r"^#{1,6}\s+Exercises\b", re.M | re.I)
_ITEM = re.compile(r"^(\d+)\.\s+(.*)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_NUMBERS = re.compile(r"Solutions?\s+((?:\d+)(?:\s*(?:,|and|&|to|-|–)\s*\d+)*)", re.I)
# An admonition written with a backtick fence (``` or more) or a colon fence (::: or more).
_ADMONITION = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{admonition\}[ \t]*(?P<title>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$\n?",
    re.M | re.S)


def _numbers(text: str) -> list[int]:
    """Exercise numbers named like "Solution 2", "Solutions 1 and 2", "Solutions 3-5"."""
    m = _NUMBERS.search(text)
    if not m:
        return []
    spec = m.group(1)
    out: list[int] = []
    for a, b in re.findall(r"(\d+)\s*(?:(?:to|-|–)\s*(\d+))?", spec):
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def exercise_list(cells) -> dict[int, str]:
    """The numbered items under the last "Exercises" heading before the solutions: {number: statement}."""
    items: dict[int, str] = {}
    for cell in cells:
        if cell.cell_type != "markdown" or not _HEADING.search(cell.source):
            continue
        text = cell.source[_HEADING.search(cell.source).end():]
        current = None
        for line in text.splitlines():
            m = _ITEM.match(line)
            if m:
                current = int(m.group(1))
                items[current] = m.group(2).strip()
            elif current is not None and line.strip() and line.startswith((" ", "\t")):
                items[current] += " " + line.strip()
            elif current is not None and not line.strip():
                continue
            elif current is not None and line.startswith("#"):
                current = None
    return items


def _title(statement: str) -> str:
    bold = _BOLD.match(statement)
    if bold:
        return bold.group(1).strip().rstrip(".")
    first = re.split(r"(?<=[.?!])\s", statement, maxsplit=1)[0]
    return first[:80].rstrip(".")


def _label(numbers: list[int]) -> str:
    if not numbers:
        return "Exercise"
    if len(numbers) == 1:
        return f"Exercise {numbers[0]}"
    return "Exercises " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _wrap_comment(text: str, width: int = 100) -> list[str]:
    words, lines, line = text.split(), [], "#"
    for w in words:
        if len(line) + 1 + len(w) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + w
    if line != "#":
        lines.append(line)
    return lines


def stub_source(solution: str, exercises: dict[int, str], ordinal: int) -> str:
    """The code that replaces a solution cell: what to do, as comments, then the NotImplementedError."""
    first_comment = next((ln for ln in solution.splitlines() if ln.lstrip().startswith("#")), "")
    numbers = [n for n in _numbers(first_comment) if n in exercises] or _numbers(first_comment)
    label = _label(numbers)
    lines = [f"# {label}: your code goes here."]
    if numbers and all(n in exercises for n in numbers):
        titles = "; ".join(_title(exercises[n]) for n in numbers)
        for n in numbers:
            lines += _wrap_comment(f"{n}. {exercises[n]}")
    else:
        titles = f"see the exercise list above (solution cell {ordinal})"
        lines.append("# Write the code for the exercise stated in the list above.")
    lines.append("# Replace the line below with your code.")
    message = f"{label}: {titles}".replace('"', "'")
    lines.append(f'raise NotImplementedError("{message}")')
    return "\n".join(lines)


def answer_note(title: str, body: str) -> str:
    """The note that replaces a written solution: where the student's answers go."""
    numbers = _numbers(title) or [int(n) for n in re.findall(r"^\s*(?:\*\*)?(\d+)\.", body, re.M)]
    label = _label(numbers).replace("Exercise", "exercise")
    return (f"**Your answers ({label}).** Write them here: double-click this cell, replace this line "
            "with your answer, and compare with the solutions in the book once you have tried.\n")


def _is_solution_admonition(title: str, body: str) -> bool:
    options = dict(re.findall(r"^:(\w[\w-]*):[ \t]*(.*)$", body, re.M))
    return "solution" in title.lower() and "dropdown" in options.get("class", "").split()


def strip_written_solutions(source: str) -> tuple[str, int]:
    """Replace each dropdown admonition titled "Solution..." by an answer note; return (text, count)."""
    count = 0

    def repl(m):
        nonlocal count
        if not _is_solution_admonition(m.group("title"), m.group("body")):
            return m.group(0)
        count += 1
        return answer_note(m.group("title"), m.group("body"))

    return _ADMONITION.sub(repl, source), count


def _retag(cell, new_tag: str) -> None:
    tags = [t for t in cell.metadata.get("tags", []) if t not in (SOLUTION_TAG, "hide-input", "hide-cell")]
    cell.metadata["tags"] = tags + [new_tag]


def make_student(nb, name: str = "notebook"):
    """Return (student notebook, number of code stubs, number of written solutions replaced)."""
    nb = copy.deepcopy(nb)
    exercises = exercise_list(nb.cells)
    stubs = written = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            if SOLUTION_TAG in cell.metadata.get("tags", []):
                stubs += 1
                cell.source = stub_source(cell.source, exercises, stubs)
                _retag(cell, EXERCISE_TAG)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif cell.cell_type == "markdown":
            tagged = SOLUTION_TAG in cell.metadata.get("tags", [])
            cell.source, n = strip_written_solutions(cell.source)
            written += n
            if tagged and n == 0:  # a solution cell written without a dropdown: replace it whole
                cell.source = answer_note("", cell.source)
                written += 1
            if tagged or n:
                _retag(cell, ANSWER_TAG)
    if stubs + written == 0:
        raise ValueError(f"{name} has no solutions: tag solution code cells 'solution' and write the other "
                         "answers in a dropdown admonition titled 'Solutions' (see chapters/04_triplet_loss.py).")
    nb.metadata.pop("jupytext", None)
    nb.metadata["course"] = {"student_copy": True, "source": name}
    return nb, stubs, written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    p.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    args = p.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    if not paths:
        print("no notebooks found in chapters/", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        try:
            student, stubs, written = make_student(nb, f"chapters/{path.name}")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        target = args.out / path.name
        atomic_write(target, lambda tmp: nbformat.write(student, tmp))
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
              f"{stubs} code exercise(s) stubbed, {written} written solution(s) replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
