"""The checks of scripts/test_book.py: on disk, and in headless Chromium on a tiny site with known defects.

Each check of what the reader sees has a page that must fail it: mathematics with the typesetter removed
(03_math_raw) or loaded from a CDN (04_math_cdn), two search boxes (05_two_search), an element wider than
the main column (06_wide), a results table wider than the column, one whose cells wrap and a printed line that scrolls (07_tables); 03_math, with the MathJax the book ships (inline, display, ``\\operatorname``,
``aligned``, ``align`` with ``\\tag``), and 01_good, with a wide code cell, must pass them.
"""

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

PAGE = """<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body>
<nav style="float:left;width:200px"><form action="{root}search.html"><input type="search" name="q"></form></nav>
<main><article class="bd-article" style="max-width:700px;margin-left:220px">
<h1 id="top">{title}</h1>{body}</article></main></body></html>"""
_ext = importlib.util.spec_from_file_location("offline_mathjax", ROOT / "book" / "_ext" / "offline_mathjax.py")
offline_mathjax = importlib.util.module_from_spec(_ext)
_ext.loader.exec_module(offline_mathjax)
MATH = r"""<p>inline <span class="math">\(y = \operatorname{ReLU}\big(F(x) + x\big)\)</span></p>
<div class="math">\[\begin{aligned} a &amp;= b + c \\ d &amp;= e \end{aligned}\]</div>
<div class="math">\[\begin{align} x &amp;= \operatorname{norm}(y) \tag{1} \end{align}\]</div>"""


def page(title, body="", head="", root="../"):
    return PAGE.format(title=title, body=body, head=head, root=root)


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
    (html / "index.html").write_text(page("Home", '<a href="chapters/01_good.html">1</a>', root=""))
    (html / "search.html").write_text(page("Search", '<div id="search-results"></div>', root=""))  # finds nothing
    (html / "_static").mkdir()
    (html / "_static" / "mathjax").symlink_to(offline_mathjax.mathjax_static_dir() / "mathjax")
    mathjax = '<script defer src="../_static/mathjax/tex-chtml.js"></script>'
    (html / "chapters" / "03_math.html").write_text(page("Math typeset", MATH, mathjax))
    (html / "chapters" / "03_math_raw.html").write_text(page("Math without typesetter", MATH))
    cdn = '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
    (html / "chapters" / "04_math_cdn.html").write_text(page("Math from a CDN", MATH, cdn))
    (html / "chapters" / "05_two_search.html").write_text(page("Two search boxes", """
        <p>text</p><button class="btn search-button-field">Search</button>"""))
    (html / "chapters" / "06_wide.html").write_text(page("Wide element", """
        <p>text</p><div style="width:1500px">a results table wider than the column</div>"""))
    cells = "".join(f"<td>{v:.4f}</td>" for v in range(6))
    (html / "chapters" / "07_tables.html").write_text(page("Unreadable tables", f"""
        <div class="cell_output"><div style="overflow-x:auto">
        <table><tr><th>variant</th>{cells * 8}</tr></table></div></div>
        <div class="cell_output"><table style="width:300px"><tr><th style="width:60px">an ablation row whose name wraps
        onto many lines</th><td>0.91</td></tr></table></div>
        <div class="cell_output"><pre style="overflow-x:auto;white-space:pre">{"a printed line " * 30}</pre></div>"""))
    (html / "chapters" / "01_good.html").write_text(page("Good chapter", """
        <div class="cell_input"><div class="highlight"><pre style="overflow-x:auto">x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; x = 1; </pre></div></div>
        <div class="cell_output"><table><tr><th>variant</th><td>0.9120</td><td>0.8830</td></tr></table></div>
        <div class="cell_output"><div class="output stderr">UserWarning: only a warning</div>
        <img src="../_images/fig.png" width="120" height="90"></div>
        <a href="../index.html#top">home</a> <a href="#top">top</a> <a href="https://example.org/">outside</a>"""))
    (html / "chapters" / "02_bad.html").write_text(page("Bad chapter", """
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
    assert [p.name for p in tb.pages(html)] == ["01_good.html", "02_bad.html", "03_math.html", "03_math_raw.html",
                                                 "04_math_cdn.html", "05_two_search.html", "06_wide.html",
                                                 "07_tables.html", "index.html", "search.html"]
    assert tb.notebook_images(html / "chapters" / "02_bad.html", html, src) == 2
    assert tb.notebook_images(html / "index.html", html, src) is None


def test_remote_math_and_screenshot_names():
    assert tb.remote_math('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>')
    assert tb.remote_math("<link rel=stylesheet href='//cdn.example.org/katex.min.css'>")
    assert not tb.remote_math('<script defer src="../_static/mathjax/tex-chtml.js?v=1"></script>')
    assert not tb.remote_math('<a href="https://www.mathjax.org/">MathJax</a>')  # a link, not a load
    assert tb.screenshot_name(Path("chapters/01_x.html")) == "chapters/01_x.png"


def test_the_book_ships_mathjax():
    static = offline_mathjax.mathjax_static_dir()
    assert (static / offline_mathjax.ENTRY).is_file()
    assert (static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")
                         and importlib.util.find_spec("selenium")),
                    reason="needs Debian's chromium and chromium-driver, and selenium")
def test_browser_finds_the_defects_and_passes_the_good_page(site, tmp_path, capsys, monkeypatch):
    html, src = site
    monkeypatch.setattr(tb, "SEARCH_TIMEOUT", 3)  # the tiny site's search page never lists results
    shots = tmp_path / "shots"
    assert tb.main(["--html", str(html), "--source", str(src), "--screenshots", str(shots)]) == 1
    out = capsys.readouterr().out
    print(out)
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert not [f for f in fails if "01_good" in f], fails
    for what in ("error output (traceback)", "error in a stderr output", "unresolved reference",
                 "image(s) did not load", "broken local link", "figure(s) not visible"):
        assert any("02_bad" in f and what in f for f in fails), (what, fails)
    assert not [f for f in fails if "03_math.html" in f], fails  # the shipped MathJax typesets all of MATH
    for bad, what in (("03_math_raw", "mathematics not typeset"), ("04_math_cdn", "mathematics not typeset"),
                      ("04_math_cdn", "math typesetter loaded from another host"),
                      ("05_two_search", "2 search boxes, not one"), ("06_wide", "main column overflows sideways"),
                      ("07_tables", "2 results table(s) not readable at a glance"),
                      ("07_tables", "1 printed output(s) scroll sideways"),
                      ("search.html", "no results for")):
        assert any(bad in f and what in f for f in fails), (bad, what, fails)
    names = [p.relative_to(html) for p in tb.pages(html)]
    for kind in ("desktop", "phone"):
        assert sorted(p.relative_to(shots / kind) for p in (shots / kind).rglob("*.png")) == \
            sorted(n.with_suffix(".png") for n in names)
