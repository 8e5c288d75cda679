"""Point the book at another repository (a fork): ``python scripts/set_repository.py https://github.com/you/dl4cv``.

The repository's address is one setting, ``repository.url`` in ``_config.yml``: the book's buttons use it,
and every chapter's first cell installs ``course_utils`` from it on Colab. This script writes the new
address there and into the ``REPO = "..."`` line of every chapter (text twin and notebook; the notebook's
outputs are left as they are), so the two never disagree (``tests/test_notebooks.py`` checks it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from course_utils.io import atomic_write_text  # noqa: E402

URL = re.compile(r"^https://[\w.-]+/[\w.-]+/[\w.-]+$")
CONFIG_LINE = re.compile(r"^(\s*url:\s*)(\S+)", re.M)
REPO_LINE = re.compile(r'REPO = "[^"]*"')


def set_repository(url: str, root: Path = ROOT) -> list[Path]:
    """Write ``url`` into ``_config.yml`` and every chapter under ``root``; return the files changed."""
    url = url.rstrip("/").removesuffix(".git")
    if not URL.match(url):
        raise ValueError(f"{url!r} is not a repository address like https://github.com/<owner>/<name>")
    config = root / "_config.yml"
    text = config.read_text(encoding="utf-8")
    if not CONFIG_LINE.search(text):
        raise ValueError(f"{config} has no 'url:' line under 'repository:'; add one (url: {url})")
    changed = []
    new = CONFIG_LINE.sub(lambda m: m.group(1) + url, text, count=1)
    if new != text:
        atomic_write_text(config, new)
        changed.append(config)
    for path in sorted((root / "chapters").glob("[0-9][0-9]_*.py")) + sorted((root / "chapters").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            nb = nbformat.reads(text, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.source = REPO_LINE.sub(f'REPO = "{url}"', cell.source)
            new = nbformat.writes(nb) + "\n"
        else:
            new = REPO_LINE.sub(f'REPO = "{url}"', text)
        if new != text:
            atomic_write_text(path, new)
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the repository's address, e.g. https://github.com/you/dl4cv")
    args = p.parse_args(argv)
    try:
        changed = set_repository(args.url)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    print("commit these files; the Colab buttons and install cells now use", args.url.rstrip("/").removesuffix(".git"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
