"""scripts/grade.py on tiny synthetic notebooks: limits stop runaway notebooks, checks can fail."""

import csv
import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
GRADE = ROOT / "scripts" / "grade.py"
_spec = importlib.util.spec_from_file_location("grade", GRADE)
grade = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grade)


def notebook(*cells):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def checked(source, output, count=1):
    """A checked cell with its stored stdout (``count=None``: never run, as in a student copy)."""
    outputs = [new_output("stream", name="stdout", text=output)] if output is not None else []
    return new_code_cell(f"# NBVAL_CHECK_OUTPUT\n{source}", execution_count=count, outputs=outputs)


def run_grade(tmp_path, *args, timeout=25, memory="2G"):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(GRADE), *map(str, args), "--out", str(out), "--timeout", str(timeout),
                           "--memory", memory, "--jobs", "2"], capture_output=True, text=True, timeout=600)
    with open(out / "report.csv", newline="") as f:
        rows = {Path(r["notebook"]).stem: r for r in csv.DictReader(f)}
    return proc, rows, out


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """One graded class: a good notebook, an endless loop, a memory hog and a changed checked output."""
    tmp = tmp_path_factory.mktemp("class")
    subs = tmp / "submissions"
    for name, nb in {
        "alice/90_good": notebook(checked("print(sum(range(10)))", "45\n"), new_code_cell("x = [1, 2, 3]")),
        "bob/90_loop": notebook(new_code_cell("import time\nwhile True:\n    time.sleep(0.05)")),
        "carol/90_hog": notebook(new_code_cell("blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))")),
        "dave/90_broken": notebook(checked("print(sum(range(10)))", "46\n")),
    }.items():
        (subs / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, subs / f"{name}.ipynb")
    return run_grade(tmp, subs)


def test_good_notebook_passes_beside_runaway_ones(class_run):
    proc, rows, _ = class_run
    good = rows["90_good"]
    assert good["status"] == "ok", proc.stdout + proc.stderr
    assert (good["student"], good["chapter"], good["checked_passed"], good["checked_failed"]) == ("alice", "90", "1", "0")
    assert proc.returncode == 1, "a class with failing notebooks must not exit 0"
    assert "1 passed, 3 failed" in proc.stdout


def test_endless_loop_is_stopped_and_reported_as_timeout(class_run):
    _, rows, _ = class_run
    loop = rows["90_loop"]
    assert loop["status"] == "timeout" and loop["student"] == "bob"
    assert 25 <= float(loop["seconds"]) < 60, "the limit, not the run, must end it"


def test_unbounded_allocation_is_stopped_and_reported_as_memory(class_run):
    _, rows, _ = class_run
    hog = rows["90_hog"]
    assert hog["status"] == "memory", hog
    assert float(hog["seconds"]) < 25, "the memory cap must stop it before the time limit does"


def test_changed_checked_output_fails_nbval(class_run):
    _, rows, _ = class_run
    broken = rows["90_broken"]
    assert broken["status"] == "failed"
    assert (broken["checked_passed"], broken["checked_failed"], broken["cell_errors"]) == ("0", "1", "0")
    assert "differs" in broken["first_error"]


def test_one_junit_report_with_one_case_per_notebook(class_run):
    _, _, out = class_run
    cases = list(ET.parse(out / "report.xml").getroot().iter("testcase"))
    assert len(cases) == 4
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"test_notebook[bob_90_loop]", "test_notebook[carol_90_hog]", "test_notebook[dave_90_broken]"}
    props = {p.get("name"): p.get("value") for c in cases if "alice" in c.get("name") for p in c.iter("property")}
    assert props["status"] == "ok" and props["student"] == "alice"


def test_submission_is_compared_with_the_reference_outputs(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    nbformat.write(notebook(checked("print(6 * 7)", "42\n"), checked("print('abc'.upper())", "ABC\n")),
                   refs / "95_demo.ipynb")
    subs = tmp_path / "subs"
    subs.mkdir()
    # a student copy: outputs cleared (unrun cells check nothing by themselves); the reference supplies them
    nbformat.write(notebook(checked("print(6 * 7)", None, None), checked("print('abc'.upper())", None, None)),
                   subs / "erin_95_demo.ipynb")
    # the same, but a checked cell was edited: it no longer matches the reference and counts as failed
    nbformat.write(notebook(checked("print(6 * 7)", None, None), checked("print('ABC')", None, None)),
                   subs / "frank_95_demo.ipynb")
    proc, rows, _ = run_grade(tmp_path, subs, "--reference", refs)
    erin, frank = rows["erin_95_demo"], rows["frank_95_demo"]
    assert (erin["status"], erin["checked_passed"], erin["student"]) == ("ok", "2", "erin"), proc.stdout
    assert (frank["status"], frank["checked_missing"], frank["checked_failed"]) == ("failed", "1", "1")


def test_notebook_runs_without_network_in_a_scratch_folder(tmp_path):
    sandbox, how = grade.network_isolation()
    if not sandbox:
        pytest.skip(f"no network isolation on this machine: {how}")
    nb = notebook(checked("import socket\nprint([name for _, name in socket.if_nameindex()])", "['lo']\n"),
                  checked("import os\nprint(os.path.basename(os.getcwd()), sorted(os.listdir()))",
                          "work ['97_sandbox.ipynb', 'results', 'runs', 'tmp']\n"))
    nbformat.write(nb, tmp_path / "97_sandbox.ipynb")
    proc, rows, _ = run_grade(tmp_path, tmp_path / "97_sandbox.ipynb", "--reference", "none")
    assert rows["97_sandbox"]["status"] == "ok", proc.stdout + (tmp_path / "report/logs").joinpath(
        "97_sandbox.log").read_text()


def test_helpers():
    assert grade.parse_size("8G") == 8 * 2**30 and grade.parse_size("512M") == 512 * 2**20
    with pytest.raises(Exception, match="memory size"):
        grade.parse_size("lots")
    assert grade.chapter_of(Path("alice_04_triplet_loss.ipynb"), None) == "04"
    assert grade.chapter_of(Path("x.ipynb"), {"metadata": {"course": {"source": "chapters/01_resnet.ipynb"}}}) == "01"
    assert grade.is_checked({"source": "# NBVAL_CHECK_OUTPUT\nprint(1)"})
    assert not grade.is_checked({"source": "print('# NBVAL_CHECK_OUTPUT')"})
