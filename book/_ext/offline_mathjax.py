"""Sphinx extension: typeset the book's mathematics with a copy of MathJax shipped inside the built site.

Sphinx loads MathJax from a CDN by default, so a reader without internet (or a browser that cannot reach
that host, like ``make test-book``'s) saw raw TeX. This points ``mathjax_path`` at
``_static/mathjax/tex-chtml.js`` and copies MathJax 3.2.2 there from the PyPI package
``sphinx-mathjax-offline`` (pinned in requirements-lock.txt, installed by ``make setup`` with the book's
other dependencies). Only the files of that package are used, not its own extension: its ``setup`` sets
``mathjax_path`` before the configuration is read, and copies the files only after a build without
errors. The build stops with an error when the package is missing, rather than falling back to a CDN.

``tex-chtml.js`` includes the ``ams`` package (``\\operatorname``, ``align``/``aligned``/``gather``,
``\\tag``); the other TeX packages it autoloads (``\\boldsymbol``, ``\\cancel``, ...) are in the copied
``input/tex/extensions``. Equation numbers of labelled equations are written by Sphinx as HTML.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from sphinx.errors import ExtensionError

PACKAGE = "sphinx-mathjax-offline"
ENTRY = "mathjax/tex-chtml.js"  # relative to _static


def mathjax_static_dir() -> Path:
    """The folder holding ``mathjax/tex-chtml.js`` in the installed package."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ExtensionError(f"the PyPI package {PACKAGE} is not installed: run `make setup` "
                             f"(pip install -c requirements-lock.txt -e '.[book]')") from None
    static = Path(dist.locate_file("sphinx-mathjax-offline/static"))
    if not (static / ENTRY).is_file():
        raise ExtensionError(f"{static / ENTRY} not found in the installed {PACKAGE} {dist.version}")
    return static


def _configure(app, config):
    config.mathjax_path = ENTRY
    # html_static_path folders are copied into _static: this one holds the folder mathjax/
    config.html_static_path = [*config.html_static_path, str(mathjax_static_dir())]


def setup(app):
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", _configure, priority=900)  # late: after the theme and Jupyter Book
    return {"parallel_read_safe": True, "parallel_write_safe": True}
