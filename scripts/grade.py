"""Grade notebooks with nbval: ``python scripts/grade.py PATH [PATH ...]`` (``make grade NB=... | DIR=...``).

Each PATH is a notebook or a folder searched (recursively) for ``*.ipynb``. Every notebook is checked
in its own process, in parallel over the cores (pytest-xdist), under these limits:

- a wall-time limit for the whole notebook (``--timeout``, seconds); the process tree is then killed;
- a memory cap (``--memory``, e.g. ``8G``): ``RLIMIT_AS`` set in the child, inherited by the kernel;
- no network where the OS allows it (a new network namespace with only loopback, via ``unshare -n``
  or ``unshare -rn``; if neither works a warning is printed and the notebook runs with the network);
- a filesystem view of its own (bubblewrap, ``bwrap``, Debian package ``bubblewrap``): only its scratch
  folder is writable; the system, the course repository (code, virtual environment, data) and the Python
  installation are read-only; everything else (the grader's home, /tmp, the other submissions, the report
  folder) is not visible. Its processes live in a PID namespace of their own: when nbval ends, whatever
  the notebook started (a detached child included) is killed with it;
- a fresh scratch working directory (the notebook is copied there; runs, results, TMPDIR and HOME go there).

The report's ``isolation`` column says, per notebook, which of the two sandboxes were applied. Where
bubblewrap is missing or cannot run, notebooks run without the filesystem view (a warning is printed);
``--require-sandbox`` then refuses to run them (status ``unsandboxed``) and the exit code is non-zero.
Either way, a process a notebook leaves behind is killed after it (the grader is a child subreaper).

The check is nbval's: ``COURSE_PROFILE=smoke pytest --nbval-lax --nbval-sanitize-with tests/sanitize.cfg``.
Every code cell must run without an error, and every cell marked ``# NBVAL_CHECK_OUTPUT`` must print
what its stored output says. With ``--reference auto`` (the default), a notebook of chapter NN (named
``NN_*.ipynb`` or a student copy made by ``make student``) is checked against the *reference* outputs of
``chapters/NN_*.ipynb``: each checked cell of the submission gets the stored output of the reference
cell with the same source, and a reference checked cell that the submission lacks (deleted or edited)
counts as failed (``checked_missing``). ``--reference none`` compares a notebook with its own outputs.

Students are named by the first folder below the graded folder (``submissions/alice/04_triplet_loss.ipynb``)
or, for files directly in it, by the file name without the chapter part (``alice_04_triplet_loss.ipynb``).

Writes ``<out>/report.xml`` (JUnit, one test case per notebook), ``<out>/report.csv`` (student, chapter,
notebook, status, checked_passed, checked_failed, checked_missing, cells_run, cell_errors, first_error,
seconds, isolation) and ``<out>/logs/<id>.log`` (nbval's output). Status is one of ok, failed, timeout,
memory, crashed, invalid, unsandboxed. The exit code is 0 only when every notebook is ok.

Student notebooks are untrusted code. What the runner contains and what it does not (the kernel itself,
readable system files, disk space, CPU time) is in book/grading.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANITIZE = ROOT / "tests" / "sanitize.cfg"
CSV_FIELDS = ["student", "chapter", "notebook", "status", "checked_passed", "checked_failed", "checked_missing",
              "cells_run", "cell_errors", "first_error", "seconds", "isolation"]
MEMORY_SIGNS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc",
                "out of memory", "Unable to allocate")
CHECK_MARKER = "NBVAL_CHECK_OUTPUT"

# Run inside the new network namespace: bring the loopback interface up (the kernel talks to nbval over
# 127.0.0.1), then become the grading command. Uses only the standard library (no `ip` needed).
_LO_UP = r"""
import fcntl, os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack("16s16s", b"lo", b"")
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, req)[:18])[1]          # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))      # SIOCSIFFLAGS |= IFF_UP
s.close()
if sys.argv[1] == "--check":
    names = [n for _, n in socket.if_nameindex()]
    t = socket.socket(); t.bind(("127.0.0.1", 0)); t.listen(); t.close()
    print(",".join(names))
else:
    os.execv(sys.argv[1], sys.argv[1:])
"""


# --------------------------------------------------------------------------------------------------
# limits


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5G' or a number of bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"memory size like 8G or 512M expected, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def network_isolation() -> tuple[list[str], str]:
    """(command prefix that runs a program without network, description); ([], warning) if impossible."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "`unshare` not found (util-linux)"
    candidates = ([["-n"]] if os.geteuid() == 0 else []) + [["-rn"]]
    reasons = []
    for flags in candidates:
        prefix = [unshare, *flags, sys.executable, "-c", _LO_UP]
        try:
            out = subprocess.run([*prefix, "--check"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            reasons.append(f"unshare {' '.join(flags)}: {e}")
            continue
        if out.returncode == 0 and out.stdout.strip() == "lo":
            return prefix, f"unshare {' '.join(flags)} (only loopback)"
        reasons.append(f"unshare {' '.join(flags)}: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
    return [], "; ".join(reasons)


# Visible read-only inside the filesystem view (when they exist), besides the course repository, the
# virtual environment and the Python installation it was made from. /bin, /lib... may be symlinks (merged /usr).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Hidden even though their folder is visible: password hashes and host keys (readable when grading as root).
_SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
_SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def bwrap_command() -> str | None:
    """The bubblewrap program: ``$GRADE_BWRAP`` if set (a path, or empty for none), else ``bwrap`` on PATH."""
    given = os.environ.get("GRADE_BWRAP")
    if given is not None:
        return given if given and os.access(given, os.X_OK) else None
    return shutil.which("bwrap")


def filesystem_view(bwrap: str, scratch: Path, hide: list[Path], workdir: Path | None = None) -> list[str]:
    """The bwrap command prefix that runs a program in its own filesystem view (see the module docstring).

    ``scratch`` is bound read-write at its own path; ``hide`` are folders that must not be visible even when
    they lie inside a read-only folder (the submissions and the report folder, when kept inside the course).
    """
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--tmpfs", "/"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in _SECRET_FILES:
        if os.path.isfile(f):
            args += ["--ro-bind", os.devnull, f]
    for d in _SECRET_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            args += ["--tmpfs", d]
    args += ["--dev", "/dev", "--proc", "/proc", "--ro-bind-try", "/sys", "/sys", "--size", str(64 * 2**20),
             "--tmpfs", "/tmp"]
    readonly = [ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                Path(os.path.realpath(sys.executable)).parent]
    seen: list[Path] = []
    for d in readonly:
        if d.is_dir() and not any(_within(d, s) for s in seen):
            seen.append(d)
            args += ["--ro-bind", str(d), str(d)]
    for h in hide:
        h = h.resolve()
        # hide only what a read-only folder would show, and never the course itself
        if any(_within(h, s) for s in seen) and not any(_within(s, h) for s in seen) and h.is_dir():
            args += ["--tmpfs", str(h)]
    args += ["--bind", str(scratch), str(scratch), "--remount-ro", "/", "--chdir", str(workdir or scratch)]
    return args


def filesystem_sandbox(network: list[str]) -> tuple[str | None, str]:
    """(bwrap, description) if a filesystem view works here (tried inside ``network``), else (None, why not)."""
    bwrap = bwrap_command()
    if bwrap is None:
        given = os.environ.get("GRADE_BWRAP")
        return None, (f"bubblewrap not found at $GRADE_BWRAP={given!r}" if given is not None
                      else "`bwrap` not found (Debian package bubblewrap)")
    with tempfile.TemporaryDirectory(prefix="grade-probe-") as tmp:
        probe = ("import os, sys; open('ok', 'w').write('1'); "
                 "sys.exit(0 if os.getpid() <= 3 and not os.access(sys.argv[1], os.W_OK) else 3)")
        cmd = [*network, *filesystem_view(bwrap, Path(tmp), []), sys.executable, "-c", probe, str(ROOT)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"bwrap: {e}"
        if out.returncode != 0 or not (Path(tmp) / "ok").is_file():
            why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
            return None, f"bwrap does not run here: {why}"[:200]
    return bwrap, "bwrap (own filesystem view and PID namespace)"


def _subreaper() -> None:
    """Adopt the orphans of our children (a notebook's detached processes), so that they can be killed."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def kill_leftovers(before: set[int]) -> int:
    """SIGKILL every descendant of this process that was not there before; returns how many there were."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return 0
    procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    alive = 0
    for p in procs:
        try:
            # bwrap's own init (and a dying PID namespace's zombies) are not the notebook's doing
            alive += p.status() != psutil.STATUS_ZOMBIE and p.name() != "bwrap"
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return alive


def _children() -> set[int]:
    try:
        import psutil
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except ImportError:  # pragma: no cover
        return set()


# Run inside the filesystem view (its PID namespace): run nbval, then count what the notebook left running
# (every process but this one and bwrap's init); they die with the namespace when this exits.
_REAP = r"""
import os, subprocess, sys
rc = subprocess.call(sys.argv[1:])
left = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
if left:
    print(f"\n[grade.py] killed {len(left)} process(es) the notebook left running", flush=True)
sys.exit(rc)
"""
_REAPED = re.compile(r"^\[grade\.py\] killed (\d+) process\(es\) the notebook left running", re.M)


def _limit(memory: int):
    def apply():
        os.setsid()
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (the Jupyter kernel runs in a session of its own)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ipykernel
        os.killpg(pid, signal.SIGKILL)
        return
    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


# --------------------------------------------------------------------------------------------------
# notebooks, students, references


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def is_checked(cell) -> bool:
    return any(ln.strip().lstrip("#").strip() == CHECK_MARKER for ln in _src(cell).splitlines()
               if ln.strip().startswith("#"))


def _norm(source: str) -> str:
    return "\n".join(ln.rstrip() for ln in source.strip().splitlines())


def chapter_of(path: Path, nb: dict | None) -> str:
    source = ((nb or {}).get("metadata", {}).get("course", {}) or {}).get("source", "")
    for text in (Path(source).name, path.name):
        m = re.search(r"(?<!\d)(\d\d)_[A-Za-z]", text)
        if m:
            return m.group(1)
    return ""


def collect(paths: list[Path]) -> list[dict]:
    jobs, seen = [], set()
    for given in paths:
        given = Path(given)
        if given.is_dir():
            files = sorted(p for p in given.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            base = given
        elif given.is_file():
            files, base = [given], given.parent
        else:
            raise SystemExit(f"{given}: no such notebook or folder")
        for f in files:
            rel = f.relative_to(base)
            if len(rel.parts) > 1:
                student = rel.parts[0]
            else:
                student = re.sub(r"[_\-\s]*\d\d_[A-Za-z].*$", "", f.stem) or (
                    "reference" if f.resolve().parent == ROOT / "chapters" else f.parent.name or f.stem)
            slug = re.sub(r"[^\w.-]+", "_", str(rel.with_suffix("")))
            while slug in seen:
                slug += "_"
            seen.add(slug)
            jobs.append({"id": slug, "path": str(f.resolve()), "student": student})
    return jobs


def find_reference(chapter: str, spec: str) -> Path | None:
    if spec == "none" or not chapter:
        return None
    folder = ROOT / "chapters" if spec == "auto" else Path(spec)
    matches = sorted(folder.glob(f"{chapter}_*.ipynb"))
    return matches[0] if len(matches) == 1 else None


def graft_reference(nb: dict, ref: dict) -> int:
    """Give each checked cell of ``nb`` the stored outputs of the reference cell with the same source.

    Returns how many checked cells of the reference have no counterpart in ``nb`` (missing or edited).
    """
    ref_cells = {}
    for c in ref["cells"]:
        if c["cell_type"] == "code" and is_checked(c):
            ref_cells.setdefault(_norm(_src(c)), c)
    found = set()
    for c in nb["cells"]:
        if c["cell_type"] == "code" and is_checked(c):
            key = _norm(_src(c))
            if key in ref_cells:
                found.add(key)
                c["outputs"] = json.loads(json.dumps(ref_cells[key].get("outputs", [])))
                c["execution_count"] = ref_cells[key].get("execution_count") or 1
    return len(set(ref_cells) - found)


# --------------------------------------------------------------------------------------------------
# one notebook


def _cell_results(junit: Path, log: str) -> dict[int, str]:
    """{code cell number: passed | failed | error | skipped} from nbval's JUnit file, else its -v log."""
    results: dict[int, str] = {}
    if junit.is_file():
        try:
            for case in ET.parse(junit).getroot().iter("testcase"):
                m = re.search(r"Cell (\d+)$", case.get("name", ""))
                if not m:
                    continue
                kinds = {child.tag for child in case}
                results[int(m.group(1))] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                                            else "skipped" if "skipped" in kinds else "passed")
            return results
        except ET.ParseError:
            pass
    for m in re.finditer(r"::Cell (\d+) (PASSED|FAILED|ERROR|XFAIL|SKIPPED)", log):
        results[int(m.group(1))] = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error"}.get(m.group(2),
                                                                                                 "skipped")
    return results


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_error(log: str) -> str:
    """The first failing cell, as "cell N: what went wrong" (nbval numbers the code cells from 0)."""
    m = re.search(r"Cell (\d+): (Cell execution caused an exception|Cell outputs differ|Timeout of [^\n]*)", log)
    if not m:
        m2 = re.search(r"^E?\s*(\w*(?:Error|Exception)\b[^\n]*)", log, re.M)
        return m2.group(1)[:200] if m2 else ""
    where = f"code cell {m.group(1)}"
    if m.group(2) == "Cell outputs differ":
        return f"{where}: checked output differs from the reference"
    if m.group(2).startswith("Timeout"):
        return f"{where}: {m.group(2)}"
    tail = log[m.end():]
    exc = re.search(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)(?:: [^\n]*)?)\s*$", tail, re.M)
    return f"{where}: {exc.group(1).strip() if exc else 'exception'}"[:200]


def grade_one(job: dict, opts: dict) -> dict:
    """Check one notebook in a scratch folder under the limits; return one row of the report."""
    path = Path(job["path"])
    row = {"student": job["student"], "chapter": "", "notebook": str(path), "status": "invalid",
           "checked_passed": 0, "checked_failed": 0, "checked_missing": 0, "cells_run": 0, "cell_errors": 0,
           "first_error": "", "seconds": 0.0, "isolation": opts.get("isolation", "")}
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(nb.get("cells"), list)
    except (OSError, ValueError, AssertionError) as e:
        row["first_error"] = f"not a readable notebook: {e}"[:200]
        return row
    row["chapter"] = chapter_of(path, nb)
    ref_path = find_reference(row["chapter"], opts["reference"])
    if ref_path is not None and ref_path.resolve() != path.resolve():
        row["checked_missing"] = graft_reference(nb, json.loads(ref_path.read_text(encoding="utf-8")))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    checked = {i for i, c in enumerate(code) if is_checked(c) and c.get("execution_count") is not None}

    if opts.get("refuse"):
        row["status"] = "unsandboxed"
        row["first_error"] = f"not run: --require-sandbox, and {opts['refuse']}"[:200]
        return row

    scratch = Path(tempfile.mkdtemp(prefix=f"grade-{job['id'][:40]}-")).resolve()
    work = scratch / "work"
    for sub in ("work", "work/tmp", "work/runs", "work/results", "home"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    target = work / path.name
    target.write_text(json.dumps(nb), encoding="utf-8")
    ini = scratch / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    junit = scratch / "nbval.xml"
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:xdist", "-c", str(ini),
           "--rootdir", str(scratch), "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
           str(SANITIZE), "--nbval-cell-timeout", str(opts["timeout"]), f"--junitxml={junit}", str(target)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COURSE_", "XDG_", "GRADE_"))}
    env.update(COURSE_PROFILE=opts["profile"], COURSE_RUNS_DIR=str(work / "runs"), COURSE_PROGRESS="0",
               HOME=str(scratch / "home"),
               COURSE_RESULTS_DIR=str(work / "results"), TMPDIR=str(work / "tmp"), MPLBACKEND="Agg",
               PYTHONHASHSEED="0", OMP_NUM_THREADS=str(opts["threads"]), MALLOC_ARENA_MAX="2",
               PYTHONDONTWRITEBYTECODE="1")
    log_path = Path(opts["out"]) / "logs" / f"{job['id']}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    view = filesystem_view(opts["bwrap"], scratch, [Path(h) for h in opts.get("hide", [])], work) if opts.get(
        "bwrap") else []
    start = time.monotonic()
    timed_out, leftovers_note = False, ""
    _subreaper()
    before = _children()
    with open(log_path, "w", encoding="utf-8") as log:
        if view:
            cmd = [sys.executable, "-c", _REAP, *cmd]
        proc = subprocess.Popen([*opts["sandbox"], *view, *cmd], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_limit(opts["memory"]))
        try:
            code_rc = proc.wait(timeout=opts["timeout"])
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc.pid)
            code_rc = proc.wait()
        # a process the notebook detached (own session, double fork) outlives nbval unless killed here
        leftovers = kill_leftovers(before)
        if leftovers:
            log.write(f"\n[grade.py] killed {leftovers} process(es) the notebook left running\n")
            leftovers_note = f"killed {leftovers} process(es) left running"
    row["seconds"] = round(time.monotonic() - start, 1)
    text = _ANSI.sub("", log_path.read_text(encoding="utf-8", errors="replace"))
    reaped = [int(n) for n in _REAPED.findall(text)]
    if reaped and not leftovers_note:
        leftovers_note = f"killed {max(reaped)} process(es) left running"
    cells = _cell_results(junit, text)
    row["cells_run"] = len(cells)
    row["checked_passed"] = sum(1 for i in checked if cells.get(i) == "passed")
    row["checked_failed"] = sum(1 for i in checked if cells.get(i) in ("failed", "error")) + row["checked_missing"]
    row["cell_errors"] = sum(1 for i, r in cells.items() if r in ("failed", "error") and i not in checked)
    row["first_error"] = _first_error(text)
    if timed_out:
        row["status"] = "timeout"
        row["first_error"] = f"stopped after the time limit of {opts['timeout']} s"
    elif any(sign in text for sign in MEMORY_SIGNS):
        row["status"] = "memory"
        row["first_error"] = row["first_error"] or f"exceeded the memory cap of {opts['memory'] / 2**30:.1f} GiB"
    elif code_rc == 0 and cells and row["checked_missing"] == 0:
        row["status"] = "ok"
    elif code_rc == 1 or (code_rc == 0 and row["checked_missing"]):
        row["status"] = "failed"
        if row["checked_missing"] and not row["first_error"]:
            row["first_error"] = f"{row['checked_missing']} checked cell(s) of the reference missing or edited"
    elif view and text.startswith("bwrap:"):
        row["status"] = "crashed"
        row["first_error"] = f"the filesystem sandbox failed: {text.splitlines()[0]}"[:200]
    elif "Kernel died" in text or "DeadKernelError" in text or code_rc < 0:
        row["status"] = "crashed"
        row["first_error"] = row["first_error"] or f"the kernel or nbval died (exit code {code_rc})"
    else:
        row["status"] = "crashed"
        row["first_error"] = row["first_error"] or f"pytest exited with code {code_rc}; see {log_path}"
    if leftovers_note:
        row["first_error"] = "; ".join(filter(None, [row["first_error"], leftovers_note]))[:200]
    shutil.rmtree(scratch, ignore_errors=True)
    return row


# --------------------------------------------------------------------------------------------------
# pytest side: one test per notebook (this file is also the test module the runner collects)


def _manifest() -> dict:
    return json.loads(Path(os.environ["GRADE_MANIFEST"]).read_text())


def pytest_generate_tests(metafunc):
    if "job" in metafunc.fixturenames:
        jobs = _manifest()["jobs"]
        metafunc.parametrize("job", jobs, ids=[j["id"] for j in jobs])


def test_notebook(job, record_property):
    manifest = _manifest()
    row = grade_one(job, manifest["opts"])
    out = Path(manifest["opts"]["out"]) / "rows" / f"{job['id']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row))
    for key in CSV_FIELDS:
        record_property(key, row[key])
    assert row["status"] == "ok", (f"{row['student']} chapter {row['chapter'] or '?'}: {row['status']}; "
                                   f"checked cells {row['checked_passed']} passed, {row['checked_failed']} failed; "
                                   f"{row['cell_errors']} other cell error(s); {row['first_error']}")


# --------------------------------------------------------------------------------------------------
# command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    p.add_argument("--out", type=Path, default=ROOT / "_build" / "grading", help="report folder")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook (default 600)")
    p.add_argument("--memory", type=parse_size, default=parse_size("8G"),
                   help="address-space cap per notebook, e.g. 8G (torch alone reserves ~4G); 0 = none")
    p.add_argument("--jobs", "-j", type=int, default=0, help="notebooks at once (default: the number of cores)")
    p.add_argument("--profile", default="smoke", choices=["smoke", "cpu", "gpu"])
    p.add_argument("--reference", default="auto",
                   help="auto (chapters/NN_*.ipynb), none (the notebook's own outputs) or a folder of references")
    p.add_argument("--allow-network", action="store_true", help="do not isolate the network")
    p.add_argument("--require-sandbox", action="store_true",
                   help="run no notebook unless the filesystem sandbox (and, without --allow-network, the network "
                        "isolation) can be applied; otherwise every notebook is reported unsandboxed")
    args = p.parse_args(argv)

    jobs = collect(args.paths)
    if not jobs:
        print(f"no notebooks in {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    if args.allow_network:
        sandbox, how = [], "network allowed (--allow-network)"
    else:
        sandbox, how = network_isolation()
        if not sandbox:
            print(f"WARNING: cannot cut the network off on this machine ({how}); notebooks run WITH network "
                  "access. Grade untrusted notebooks in a container or VM.", file=sys.stderr)
            how = "WITH network (isolation unavailable)"
    network_ok = bool(sandbox) or args.allow_network
    bwrap, fs_how = filesystem_sandbox(sandbox)
    if bwrap is None and not args.require_sandbox:
        print(f"WARNING: no filesystem sandbox on this machine ({fs_how}); notebooks can read and write what your "
              "user can. Install bubblewrap (Debian package bubblewrap), or grade in a container or VM.",
              file=sys.stderr)
    isolation = "; ".join([f"filesystem: {fs_how}" if bwrap else f"filesystem: NOT contained ({fs_how})",
                           f"network: {how}" if network_ok else f"network: NOT isolated ({how})"])
    refuse = ""
    if args.require_sandbox and (bwrap is None or not network_ok):
        refuse = "; ".join(([f"no filesystem sandbox: {fs_how}"] if bwrap is None else [])
                           + ([f"no network isolation: {how}"] if not network_ok else []))
        print(f"ERROR: --require-sandbox: {refuse}; no notebook is run", file=sys.stderr)
    cores = os.cpu_count() or 1
    workers = min(len(jobs), args.jobs or cores)
    out = args.out.resolve()
    shutil.rmtree(out / "rows", ignore_errors=True)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    opts = {"out": str(out), "timeout": args.timeout, "memory": args.memory, "profile": args.profile,
            "reference": args.reference if args.reference in ("auto", "none") else str(Path(args.reference).resolve()),
            "sandbox": sandbox, "threads": max(1, cores // workers), "bwrap": bwrap, "isolation": isolation,
            "refuse": refuse,
            # visible read-only only if inside the course repository: hidden by an empty folder on top
            "hide": sorted({str(out)} | {str(p.resolve() if p.is_dir() else p.resolve().parent) for p in args.paths})}
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({"jobs": jobs, "opts": opts}, indent=1))
    print(f"grading {len(jobs)} notebook(s), {workers} at a time, profile {args.profile}, "
          f"limit {args.timeout} s and {args.memory / 2**30:.1f} GiB each; {isolation}", flush=True)

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c", os.devnull,
           "-o", "junit_family=xunit1", "-o", "junit_suite_name=grading", f"--junitxml={out / 'report.xml'}",
           "--tb=line", str(Path(__file__).resolve())]
    if workers > 1:
        cmd[4:4] = ["-n", str(workers)]
    env = {**os.environ, "GRADE_MANIFEST": str(manifest)}
    _subreaper()
    before = _children()
    subprocess.run(cmd, env=env, cwd=ROOT)
    kill_leftovers(before)  # a worker killed mid-notebook may leave a notebook's processes to us

    rows = []
    for job in jobs:
        f = out / "rows" / f"{job['id']}.json"
        if f.is_file():
            rows.append(json.loads(f.read_text()))
        else:
            rows.append({**{k: "" for k in CSV_FIELDS}, "student": job["student"], "notebook": job["path"],
                         "status": "crashed", "first_error": "the grading worker died", "isolation": isolation})
    rows.sort(key=lambda r: (r["student"], r["chapter"], r["notebook"]))
    with open(out / "report.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'student':<16} {'ch':<3} {'status':<8} {'checked ok/failed':<18} {'errors':<7} first error")
    for r in rows:
        print(f"{r['student'][:16]:<16} {r['chapter'] or '?':<3} {r['status']:<8} "
              f"{str(r['checked_passed']) + '/' + str(r['checked_failed']):<18} {str(r['cell_errors']):<7} "
              f"{r['first_error'][:70]}")
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"\nreport: {out / 'report.csv'} and {out / 'report.xml'}")
    print(f"{ok} passed, {len(rows) - ok} failed")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
