"""The checks of scripts/test_book.py: on disk, and in headless Chromium on a tiny site with known defects."""

import importlib.util
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("test_book_script", ROOT / "scripts" / "test_book.py")
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

PAGE = """<!DOCTYPE html><html><head><title>{title}</title></head><body>
<h1 id="top">{title}</h1>{body}</body></html>"""


def _notebook(path: Path, images: int):
    png = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
           "metadata": {}}
    cell = {"cell_type": "code", "source": "plot()", "metadata": {}, "execution_count": 1,
            "outputs": [png] * images}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


@pytest.fixture
def site(tmp_path):
    html, src = tmp_path / "html", tmp_path / "src"
    (html / "chapters").mkdir(parents=True)
    (html / "_images").mkdir()
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    fig.savefig(html / "_images" / "fig.png")
    plt.close(fig)
    (html / "index.html").write_text(PAGE.format(title="Home", body='<a href="chapters/01_good.html">1</a>'))
    (html / "chapters" / "01_good.html").write_text(PAGE.format(title="Good chapter", body="""
        <div class="cell_output"><div class="output stderr">UserWarning: only a warning</div>
        <img src="../_images/fig.png" width="120" height="90"></div>
        <a href="../index.html#top">home</a> <a href="#top">top</a> <a href="https://example.org/">outside</a>"""))
    (html / "chapters" / "02_bad.html").write_text(PAGE.format(title="Bad chapter", body="""
        <div class="cell_output"><div class="output traceback">Traceback (most recent call last): boom</div></div>
        <div class="cell_output"><div class="output stderr">ValueError: wrong shape</div></div>
        <div class="cell_output"><img src="../_images/missing.png"></div>
        <div class="cell_output"><img src="../_images/fig.png" style="display:none"></div>
        <span class="problematic">:ref:`nowhere`</span>
        <a href="../gone.html">gone</a> <a href="../index.html#nowhere">bad fragment</a>"""))
    _notebook(src / "chapters" / "01_good.ipynb", 1)
    _notebook(src / "chapters" / "02_bad.ipynb", 2)
    return html, src


def test_local_links_resolve_to_files_and_ids(site):
    html, _ = site
    base = "http://127.0.0.1:8000/chapters/01_good.html"
    assert tb.link_problem("http://127.0.0.1:8000/index.html#top", base, html) is None
    assert tb.link_problem("http://127.0.0.1:8000/", base, html) is None  # a folder means its index.html
    assert tb.link_problem("https://example.org/x", base, html) is None  # not local: not checked here
    assert "missing file gone.html" in tb.link_problem("http://127.0.0.1:8000/gone.html", base, html)
    assert "no element with id 'nowhere'" in tb.link_problem("http://127.0.0.1:8000/index.html#nowhere", base, html)


def test_error_outputs_and_console_messages_are_told_apart():
    assert tb.stderr_is_error("Traceback (most recent call last):\n  File ...")
    assert tb.stderr_is_error("some text\nRuntimeError: CUDA missing")
    assert not tb.stderr_is_error("UserWarning: the figure layout changed\n  warnings.warn(")
    assert tb.is_browser_error("http://127.0.0.1:1/a.html 3:1 Uncaught SyntaxError: x")
    assert tb.is_browser_error("http://127.0.0.1:1/x.js - Failed to load resource: 404")
    assert not tb.is_browser_error("http://127.0.0.1:1/favicon.ico - Failed to load resource: 404")
    assert not tb.is_browser_error('http://127.0.0.1:1/theme.js 0:1 "Got invalid theme mode"')


def test_pages_and_expected_figures(site):
    html, src = site
    assert [p.name for p in tb.pages(html)] == ["01_good.html", "02_bad.html", "index.html"]
    assert tb.notebook_images(html / "chapters" / "02_bad.html", html, src) == 2
    assert tb.notebook_images(html / "index.html", html, src) is None


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")
                         and importlib.util.find_spec("selenium")),
                    reason="needs Debian's chromium and chromium-driver, and selenium")
def test_browser_finds_the_defects_and_passes_the_good_page(site, tmp_path, capsys):
    html, src = site
    shots = tmp_path / "shots"
    assert tb.main(["--html", str(html), "--source", str(src), "--screenshots", str(shots)]) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert not [f for f in fails if "01_good" in f], fails
    for what in ("error output (traceback)", "error in a stderr output", "unresolved reference",
                 "image(s) did not load", "broken local link", "figure(s) not visible"):
        assert any("02_bad" in f and what in f for f in fails), (what, fails)
    assert sorted(p.name for p in shots.glob("*.png")) == ["01_good.png", "02_bad.png"]
