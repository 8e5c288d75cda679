"""Student copies (scripts/make_student.py): exercises everywhere, no solutions left, stubs the only errors."""

import ast
import builtins
import importlib.util
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
ms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ms)

# The chapter run for real under the smoke profile (the others are checked statically, to stay fast):
# chapter 3, whose exercises have code solutions, so its student copy really reaches a stub.
RUN_CHAPTER = os.environ.get("COURSE_STUDENT_RUN", "03")


def read(path):
    return nbformat.read(path, as_version=4)


def is_solution(cell):
    return "solution" in cell.metadata.get("tags", [])


def code_lines(source):
    return {ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")}


@pytest.fixture(scope="module")
def copies():
    return {p.name: (read(p), ms.make_student(read(p), p.name)[0]) for p in NOTEBOOKS}


def test_there_are_chapters():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_exercises_with_solutions(path):
    nb = read(path)
    assert any(c.cell_type == "markdown" and ms._HEADING.search(c.source) for c in nb.cells), \
        f"{path.name} has no '## Exercises' section"
    assert ms.exercise_list(nb.cells), f"{path.name}: the Exercises section has no numbered exercises"
    code = [c for c in nb.cells if c.cell_type == "code" and is_solution(c)]
    written = sum(ms.strip_written_solutions(c.source)[1] for c in nb.cells if c.cell_type == "markdown")
    assert code or written, f"{path.name} has exercises but no solutions (tag cells 'solution')"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_has_no_solutions_and_no_outputs(path, copies):
    ref, student = copies[path.name]
    assert len(student.cells) == len(ref.cells)
    assert not any(is_solution(c) for c in student.cells)
    for c in student.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
    # no line of solution code survives (lines that also occur outside solutions do not count)
    other = set().union(*(code_lines(c.source) for c in ref.cells if c.cell_type == "code" and not is_solution(c)))
    secret = set().union(*(code_lines(c.source) for c in ref.cells if c.cell_type == "code" and is_solution(c))) - other
    left = secret & set().union(*(code_lines(c.source) for c in student.cells if c.cell_type == "code"))
    assert not left, f"solution code left in the student copy: {sorted(left)[:3]}"
    # no written solution survives: the answer-note replaces each dropdown
    for r, s in zip(ref.cells, student.cells):
        if r.cell_type == "markdown":
            _, n = ms.strip_written_solutions(s.source)
            assert n == 0
            if ms.strip_written_solutions(r.source)[1] or is_solution(r):
                assert "Your answers" in s.source and ":class: dropdown" not in s.source
        elif is_solution(r):
            tree = ast.parse(s.source)
            last = tree.body[-1]
            assert isinstance(last, ast.Raise) and last.exc.func.id == "NotImplementedError"
            assert re.match(r"Exercises? \d", last.exc.args[0].value), last.exc.args[0].value
            assert "exercise" in s.metadata["tags"] and "hide-input" not in s.metadata["tags"]
        else:  # everything else intact
            assert (s.cell_type, s.source, s.metadata.get("tags")) == (r.cell_type, r.source, r.metadata.get("tags"))


def _names(source):
    """(names bound at any level, names read) of a code cell; IPython magics and shell lines are skipped."""
    text = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    bound, used = set(), set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, used


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_depends_on_a_solution(path):
    """Statically: a name defined only by solution code is never used by a later non-solution cell,
    so once the solutions are stubs the stubs are the only cells that fail."""
    seen, from_solutions = set(dir(builtins)), set()
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type != "code":
            continue
        bound, used = _names(cell.source)
        if is_solution(cell):
            from_solutions |= bound - seen
            continue
        needs = (used & from_solutions) - bound
        assert not needs, f"{path.name} cell {i} uses {sorted(needs)}, defined only in a solution cell"
        seen |= bound
        from_solutions -= bound


def test_make_student_writes_every_chapter(tmp_path):
    assert ms.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]


def test_a_chapter_without_solutions_is_an_error():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## Exercises\n\n1. Think.")])
    with pytest.raises(ValueError, match="no solutions"):
        ms.make_student(nb, "x.ipynb")


def test_stub_and_note_wording():
    exercises = ms.exercise_list([nbformat.v4.new_markdown_cell(
        "## Exercises\n\n1. **Count.** How many?\n2. **Plot it.** Draw the curve\n   of the loss.\n")])
    assert exercises == {1: "**Count.** How many?", 2: "**Plot it.** Draw the curve of the loss."}
    stub = ms.stub_source("# Solution 2: plt.plot(losses)\nplt.plot(losses)", exercises, 1)
    assert "plt.plot" not in stub and "# 2. **Plot it.** Draw the curve of the loss." in stub
    assert stub.endswith('raise NotImplementedError("Exercise 2: Plot it")')
    text, n = ms.strip_written_solutions("Intro\n\n````{admonition} Solutions 1 and 2\n:class: dropdown\n"
                                         "**1.** Four.\n````\n\n```{admonition} Note\n:class: dropdown\nkeep\n```\n")
    assert n == 1 and "Four" not in text and "exercises 1 and 2" in text and "{admonition} Note" in text


@pytest.mark.skipif(not any(p.name.startswith(RUN_CHAPTER) for p in NOTEBOOKS), reason="no such chapter")
def test_student_copy_runs_until_the_first_stub(tmp_path, monkeypatch):
    """One chapter's student copy, run under the smoke profile: only the stubs fail, the first stub is reached."""
    from nbclient import NotebookClient

    path = next(p for p in NOTEBOOKS if p.name.startswith(RUN_CHAPTER))
    student, stubs, _ = ms.make_student(read(path), path.name)
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    monkeypatch.setenv("COURSE_PROGRESS", "0")
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "results"))
    NotebookClient(student, timeout=600, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in student.cells if c.cell_type == "code"]
    errors = [(i, o) for i, c in enumerate(code) for o in c.outputs if o.output_type == "error"]
    stub_cells = [i for i, c in enumerate(code) if "exercise" in c.metadata.get("tags", [])]
    assert len(stub_cells) == stubs and stubs >= 1, "the chapter run must have at least one code exercise"
    assert [i for i, _ in errors] == stub_cells, [(i, o.ename, o.evalue) for i, o in errors]
    assert all(o.ename == "NotImplementedError" and o.evalue.startswith("Exercise") for _, o in errors)
    assert all(c.execution_count for c in code), "every cell must have run"
