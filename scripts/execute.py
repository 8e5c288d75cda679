"""Execute one chapter in place: ``python scripts/execute.py 01 --profile cpu``.

Reads the chapter's text twin ``chapters/NN_*.py`` (jupytext percent format), runs it with nbclient
in a fresh kernel under ``COURSE_PROFILE=<profile>`` and writes ``chapters/NN_*.ipynb`` with the outputs,
atomically and only if no cell failed. Finished experiment runs go to a fresh temporary folder
(``COURSE_RUNS_DIR``), so no result of older code is reused. Progress bars are turned off (``COURSE_PROGRESS=0``) so the
stored outputs stay small: ``fit`` prints one line per epoch instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from course_utils.io import atomic_write  # noqa: E402


def chapter_path(ch: str) -> Path:
    matches = sorted((ROOT / "chapters").glob(f"{ch}_*.py")) or sorted((ROOT / "chapters").glob(f"{ch}*.py"))
    if len(matches) != 1:
        raise SystemExit(f"expected one chapters/{ch}_*.py, found {[m.name for m in matches]}")
    return matches[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapter", help="chapter number prefix, e.g. 00 or 01")
    p.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    p.add_argument("--reuse-runs", action="store_true",
                   help="reuse finished runs in runs/ (default: a fresh folder, so every number comes from this code)")
    args = p.parse_args(argv)

    src = chapter_path(args.chapter)
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    os.environ["COURSE_PROFILE"] = args.profile
    os.environ["COURSE_PROGRESS"] = "0"
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if not args.reuse_runs:
        os.environ["COURSE_RUNS_DIR"] = tempfile.mkdtemp(prefix="course-runs-")
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(src.parent)}})
    start = time.perf_counter()
    print(f"executing {src.name} with COURSE_PROFILE={args.profile} ...", flush=True)
    try:
        client.execute()
    except CellExecutionError as e:
        print(f"FAILED: {src.name} raised an error; the .ipynb was not written.\n{e}", file=sys.stderr)
        return 1
    minutes = (time.perf_counter() - start) / 60
    out = src.with_suffix(".ipynb")
    atomic_write(out, lambda tmp: nbformat.write(nb, tmp))
    size = out.stat().st_size / 1e6
    print(f"wrote {out.relative_to(ROOT)} in {minutes:.1f} min ({size:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
