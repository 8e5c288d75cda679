"""scripts/grade.py on tiny synthetic notebooks: limits stop runaway notebooks, checks can fail, hostile
notebooks are contained (where the sandbox can be applied: else those tests skip, saying why, unless
GRADE_REQUIRE_SANDBOX=1 asks for the sandbox, and then they fail)."""

import csv
import importlib.util
import os
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


def run_grade(tmp_path, *args, timeout=25, memory="2G", out="report", env=None):
    out = tmp_path / out
    proc = subprocess.run([sys.executable, str(GRADE), *map(str, args), "--out", str(out), "--timeout", str(timeout),
                           "--memory", memory, "--jobs", "2"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
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


REQUIRE_SANDBOX = os.environ.get("GRADE_REQUIRE_SANDBOX") == "1"


def skip_unless(available, what, why):
    """Skip a containment test where the machine cannot contain, saying why; fail if GRADE_REQUIRE_SANDBOX=1."""
    if available:
        return
    if REQUIRE_SANDBOX:
        pytest.fail(f"GRADE_REQUIRE_SANDBOX=1 but there is no {what} on this machine: {why}")
    pytest.skip(f"no {what} on this machine ({why}): containment not tested here; "
                "set GRADE_REQUIRE_SANDBOX=1 to make this a failure")


def test_notebook_runs_without_network_in_a_scratch_folder(tmp_path):
    sandbox, how = grade.network_isolation()
    skip_unless(sandbox, "network isolation", how)
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


# --------------------------------------------------------------------------------------------------
# hostile notebooks: each tries to break out; each must be contained and reported, the batch going on


TOKEN = f"grading-escapee-{os.getpid()}"
DETACH = """import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {token!r}], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:          # and a double fork, for good measure
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {token!r}])
    os._exit(0)
os.wait()
print("detached")"""


def escapees():
    import psutil
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if TOKEN in (p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory):
    """A class of hostile notebooks beside an honest one, graded with --require-sandbox."""
    network, _ = grade.network_isolation()
    bwrap, how = grade.filesystem_sandbox(network)
    skip_unless(bwrap, "filesystem sandbox (bubblewrap)", how)
    tmp = tmp_path_factory.mktemp("breakout")
    home = tmp / "home"                      # the grader's home for this run, with a secret in it
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("SECRET-KEY\n")
    subs = tmp / "submissions"
    honest = subs / "alice" / "90_honest.ipynb"
    in_repo = [ROOT / f"grading_probe_{os.getpid()}", ROOT / "course_utils" / f"grading_probe_{os.getpid()}"]
    notebooks = {
        "alice/90_honest": notebook(
            checked("print(sum(range(10)))", "45\n"),
            new_code_cell("from pathlib import Path\nPath('notes.txt').write_text('mine')\n"
                          "(Path.home() / '.cache').mkdir(parents=True, exist_ok=True)")),
        "mallory/90_home_write": notebook(new_code_cell(
            f"open({str(home / 'grading_probe_was_here')!r}, 'w').write('was here')")),
        "mallory/90_repo_write": notebook(
            new_code_cell(f"open({str(in_repo[0])!r}, 'w').write('was here')"),
            new_code_cell("import os, course_utils\n"
                          f"open(os.path.join(os.path.dirname(course_utils.__file__), {in_repo[1].name!r}), 'w')"
                          ".write('was here')")),
        "mallory/90_peer_read": notebook(new_code_cell(f"print(open({str(honest)!r}).read()[:100])")),
        "mallory/90_peer_write": notebook(
            new_code_cell(f"open({str(honest)!r}, 'w').write('{{}}')"),
            new_code_cell(f"open({str(tmp / 'report' / 'report.csv')!r}, 'w').write('alice,90,x,ok')")),
        "mallory/90_list_home": notebook(
            new_code_cell(f"import os\nprint(os.listdir({str(home)!r}))"),
            new_code_cell(f"print(open({str(home / '.ssh' / 'id_rsa')!r}).read())")),
        "mallory/90_fork": notebook(new_code_cell(DETACH.format(token=TOKEN)),
                                    new_code_cell("import time\nwhile True:\n    time.sleep(0.1)")),
        "mallory/90_daemon": notebook(new_code_cell(DETACH.format(token=TOKEN))),
    }
    for name, nb in notebooks.items():
        (subs / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, subs / f"{name}.ipynb")
    before = honest.read_bytes()
    try:
        proc, rows, out = run_grade(tmp, subs, "--require-sandbox", "--reference", "none", timeout=20,
                                    env={"HOME": str(home)})
        left = [(p.pid, p.info["cmdline"]) for p in escapees()]
    finally:
        created = [p for p in in_repo if p.exists()]
        for p in created:
            p.unlink()
        for p in escapees():
            p.kill()
    logs = {name: (out / "logs" / f"{name.replace('/', '_')}.log").read_text() for name in notebooks}
    return {"proc": proc, "rows": rows, "out": out, "home": home, "honest": (honest, before), "logs": logs,
            "created": created, "left": left}


def _failed_with(row, *signs):
    return row["status"] == "failed" and any(sign in row["first_error"] for sign in signs)


def test_breakouts_are_contained_and_the_honest_notebook_passes(breakout_run):
    r = breakout_run
    rows, proc = r["rows"], r["proc"]
    assert rows["90_honest"]["status"] == "ok", proc.stdout + proc.stderr + r["logs"]["alice/90_honest"]
    assert "filesystem: bwrap" in rows["90_honest"]["isolation"], rows["90_honest"]
    assert proc.returncode == 1 and "2 passed, 6 failed" in proc.stdout, proc.stdout + proc.stderr


def test_writing_to_the_home_directory_is_contained(breakout_run):
    row = breakout_run["rows"]["90_home_write"]
    assert not (breakout_run["home"] / "grading_probe_was_here").exists()
    assert _failed_with(row, "FileNotFoundError", "Read-only file system", "PermissionError"), row


def test_writing_into_the_course_repository_is_contained(breakout_run):
    row = breakout_run["rows"]["90_repo_write"]
    assert breakout_run["created"] == [], "a notebook wrote into the course repository"
    assert _failed_with(row, "Read-only file system"), row
    assert row["cell_errors"] == "2", "both cells (repo root, next to course_utils) must fail"


def test_other_submissions_and_the_report_are_invisible(breakout_run):
    rows = breakout_run["rows"]
    honest, before = breakout_run["honest"]
    assert honest.read_bytes() == before, "another submission was changed"
    assert _failed_with(rows["90_peer_read"], "FileNotFoundError"), rows["90_peer_read"]
    assert _failed_with(rows["90_peer_write"], "FileNotFoundError"), rows["90_peer_write"]
    assert rows["90_peer_write"]["cell_errors"] == "2", "the report folder must not be writable either"
    assert rows["90_honest"]["status"] == "ok"


def test_the_graders_home_cannot_be_listed_or_read(breakout_run):
    row = breakout_run["rows"]["90_list_home"]
    assert _failed_with(row, "FileNotFoundError"), row
    assert row["cell_errors"] == "2"
    assert "SECRET-KEY" not in breakout_run["logs"]["mallory/90_list_home"]


def test_a_child_that_outlives_its_kernel_is_stopped_with_it(breakout_run):
    rows = breakout_run["rows"]
    assert breakout_run["left"] == [], f"processes of a submission left running after the batch: {breakout_run['left']}"
    assert rows["90_fork"]["status"] == "timeout", rows["90_fork"]
    assert 20 <= float(rows["90_fork"]["seconds"]) < 50
    assert rows["90_daemon"]["status"] == "ok", breakout_run["logs"]["mallory/90_daemon"]
    assert "process(es) left running" in rows["90_daemon"]["first_error"], rows["90_daemon"]
    assert "left running" not in rows["90_honest"]["first_error"]


def test_without_the_sandbox_the_report_says_so_and_require_sandbox_refuses(tmp_path):
    """Runs on every machine: bubblewrap made unavailable (GRADE_BWRAP=""), as on a machine without it."""
    ran = tmp_path / "ran"
    nbformat.write(notebook(new_code_cell(f"open({str(ran)!r}, 'w').write('1')")), tmp_path / "90_plain.ipynb")
    proc, rows, _ = run_grade(tmp_path, tmp_path / "90_plain.ipynb", "--reference", "none", env={"GRADE_BWRAP": ""})
    row = rows["90_plain"]
    assert row["status"] == "ok" and ran.exists(), proc.stdout + proc.stderr
    assert row["isolation"].startswith("filesystem: NOT contained (bubblewrap not found"), row["isolation"]
    assert "WARNING: no filesystem sandbox" in proc.stderr
    ran.unlink()
    proc, rows, out = run_grade(tmp_path, tmp_path / "90_plain.ipynb", "--reference", "none", "--require-sandbox",
                                out="strict", env={"GRADE_BWRAP": ""})
    row = rows["90_plain"]
    assert row["status"] == "unsandboxed" and "--require-sandbox" in row["first_error"], row
    assert not ran.exists(), "a notebook ran although the sandbox was required and missing"
    assert proc.returncode == 1 and "0 passed, 1 failed" in proc.stdout
    props = {p.get("name"): p.get("value") for p in ET.parse(out / "report.xml").getroot().iter("property")}
    assert props["status"] == "unsandboxed" and "NOT contained" in props["isolation"]


def test_the_view_hides_submissions_and_report_kept_inside_the_course(tmp_path):
    view = grade.filesystem_view("/usr/bin/bwrap", tmp_path, [ROOT / "_build" / "grading", ROOT / "chapters",
                                                              tmp_path / "elsewhere", ROOT.parent])
    pairs = list(zip(view, view[1:]))
    assert ("--ro-bind", str(ROOT)) in pairs and ("--bind", str(tmp_path)) in pairs
    hidden = {b for a, b in pairs if a == "--tmpfs"}
    assert {str(ROOT / "chapters"), "/tmp", "/"} <= hidden
    assert str(ROOT.parent) not in hidden and str(tmp_path / "elsewhere") not in hidden
    assert view.index(str(ROOT)) < view.index(str(ROOT / "chapters")), "hidden after the course is bound"
