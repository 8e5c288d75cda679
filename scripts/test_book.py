"""Test the built book in a real browser: ``python scripts/test_book.py`` (``make test-book`` builds first).

Serves ``_build/html`` on a free localhost port and drives headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through Selenium) through every page. On each page it checks that

- no cell shows an error: no traceback output (``.cell_output .output.traceback``), and no stderr output
  that contains a Python traceback or an ``...Error:`` / ``...Exception:`` line (warnings are allowed);
  no docutils error (``.system-message``) or unresolved reference (``.problematic``) is rendered;
- every ``<img>`` loads (``naturalWidth > 0``);
- every local link (``a[href]``, stylesheets, scripts) points to a file of the build, and every
  ``#fragment`` of such a link to an element with that id;
- the browser logged no uncaught script error and no failed load of a local file (a 404);
- on chapter pages: the figures of the notebook's outputs are there (as many as the notebook has
  images) and visible once scrolled to (displayed, at least 50 x 50 px, loaded);
- the mathematics is typeset, offline: on a page with math (an element of class ``math``) MathJax's
  output (``mjx-container``) is there once its scripts ran, no ``.math`` element still shows raw
  ``\\(`` or ``\\[``, none holds a TeX error (``mjx-merror``), and no page loads a math typesetter
  from another host (checked in the HTML on disk too: ``remote_math``);
- one search box: exactly one visible search control (a search field or the button that opens
  one) outside the search page's own form;
- at the desktop width (1280 px) the main column (``article.bd-article``) does not overflow sideways:
  no element sticks out of it or scrolls sideways, and the page does not scroll sideways, except
  inside code cells and cell outputs (``.cell_input``, ``.cell_output``: their scroll bars are the
  theme's design), code blocks (``div.highlight``, ``pre``) and the margin notes the theme puts
  beside the column on purpose (``.margin``, ``.sidenote``, ``.marginnote``, ``.full-width``);
- results tables are readable at a glance: at the desktop width no table in a cell output is wider
  than the main column (so none scrolls sideways) and none has a cell wrapped onto three lines or more;
- printed outputs are readable without scrolling: at the desktop width no text output (``.cell_output pre``)
  scrolls sideways (the book's stylesheet wraps a line that does not fit);
- the search works: on a chapter, the one search box is opened, a word from the last chapter's
  title typed and Enter pressed; the search page lists results that include that chapter.

It saves a screenshot of the first screen of every page at the desktop width (1280 x 900) and at a
phone's (390 x 844) to ``_build/screenshots/desktop/`` and ``_build/screenshots/phone/`` (the page's
path, ``.html`` replaced by ``.png``).
The browser reaches no other host: every host name but localhost resolves to nothing.
Prints one line per failed check and ends with ``N passed, M failed``; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
DESKTOP, PHONE = (1280, 900), (390, 844)
SEARCH_TIMEOUT = 30  # seconds for the search page to list results
# a <script src> or <link href> on another host that loads a math typesetter (MathJax, KaTeX)
REMOTE_MATH = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']((?:https?:)?//[^"']*(?:mathjax|katex)[^"']*)""",
                         re.I)
ERROR_LINE = re.compile(r"^\s*(Traceback \(most recent call last\)|[A-Za-z_][\w.]*(Error|Exception): )", re.M)


# --------------------------------------------------------------------------------------------------
# the site on disk (no browser needed; tested in tests/test_book_checks.py)


def pages(html_root: Path) -> list[Path]:
    """Every HTML page of the build, outside the theme's and Sphinx's asset folders."""
    return sorted(p for p in html_root.rglob("*.html") if not SKIP_DIRS & set(p.relative_to(html_root).parts))


@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", text))


def resolve_local(url: str, base: str, html_root: Path) -> tuple[Path | None, str]:
    """(file the URL of the local site points to, fragment), or (None, '') for another host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.netloc != urlsplit(base).netloc:
        return None, ""
    path = html_root / unquote(parts.path).lstrip("/")
    if parts.path.endswith("/") or path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


def link_problem(url: str, base: str, html_root: Path) -> str | None:
    """Why a local link is broken, or None when it is fine (or not local)."""
    target, fragment = resolve_local(url, base, html_root)
    if target is None:
        return None
    if not target.is_file():
        return f"missing file {target.relative_to(html_root) if target.is_relative_to(html_root) else target}"
    if fragment and target.suffix == ".html" and fragment not in ids_in(target):
        return f"no element with id '{fragment}' in {target.relative_to(html_root)}"
    return None


def stderr_is_error(text: str) -> bool:
    """A stderr output is an error when it holds a traceback or an 'XxxError: ...' line; warnings are not."""
    return bool(ERROR_LINE.search(text))


def remote_math(html_text: str) -> list[str]:
    """The URLs on other hosts a page loads a math typesetter from (the book must ship its own)."""
    return REMOTE_MATH.findall(html_text)


def screenshot_name(rel: Path) -> str:
    """``chapters/01_x.html`` -> ``chapters/01_x.png`` (under desktop/ and phone/)."""
    return rel.with_suffix(".png").as_posix()


def is_browser_error(message: str) -> bool:
    """A console entry that means a defect: an uncaught script error, or a local file that failed to load.

    The browser's own request for /favicon.ico (the book links none) and messages a theme script logs
    with console.error (e.g. "Got invalid theme mode") are not defects of the book.
    """
    if "favicon.ico" in message:
        return False
    return "Uncaught" in message or "Failed to load resource" in message


def notebook_images(html_page: Path, html_root: Path, root: Path) -> int | None:
    """How many image outputs the chapter's notebook has (None if the page is not a chapter notebook)."""
    rel = html_page.relative_to(html_root).with_suffix(".ipynb")
    nb_path = root / rel
    if not nb_path.is_file():
        return None
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    count = 0
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        count += sum(1 for o in cell.get("outputs", [])
                     if o["output_type"] in ("display_data", "execute_result")
                     and any(k.startswith("image/") for k in o.get("data", {})))
    return count


class Server:
    """``http.server`` serving a folder on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# --------------------------------------------------------------------------------------------------
# the browser


def start_browser(chromium: str, driver: str, profile_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--window-size=1280,900",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                 f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.page_load_strategy = "normal"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_page_load_timeout(60)
    browser.set_script_timeout(60)
    return browser


# One script per page: every fact the checks need, after the images were asked to load and MathJax (when the
# page loads it) finished its first typesetting. Selectors shared with the self-test in tests/test_book_checks.py.
SEARCH_CONTROLS = "input[type=search], input[name=q], .search-button-field, .search-button"
OVERFLOW_EXEMPT = (".cell_input, .cell_output, div.highlight, pre, .margin, .sidenote, .marginnote, .full-width, "
                   ".tag_full-width, mjx-assistive-mml")
_PAGE_FACTS = """
const done = arguments[arguments.length - 1];
const SEARCH = arguments[0], EXEMPT = arguments[1];
const imgs = Array.from(document.images);
imgs.forEach(img => { img.loading = 'eager'; });
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
const timeout = new Promise(resolve => setTimeout(resolve, 20000));
Promise.all([Promise.race([typeset.catch(() => null), timeout]),
             ...imgs.map(img => img.decode().catch(() => null))]).then(() => {
  const text = el => (el.innerText || el.textContent || '').trim();
  const visible = el => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}); };
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\\s+/).slice(0, 3).join('.') : '') +
    ' "' + text(el).slice(0, 40).replace(/\\s+/g, ' ') + '"';
  const maths = Array.from(document.querySelectorAll('.math'));
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const c = column.getBoundingClientRect();
  const overflow = [];
  for (const el of column.querySelectorAll('*')) {
    if (el.closest(EXEMPT) || overflow.some(o => o.contains(el))) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const ox = getComputedStyle(el).overflowX;
    if (r.right > c.right + 1 || r.left < c.left - 1 ||
        ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1)) overflow.push(el);
  }
  // results tables in cell outputs: wider than the column (so they scroll) or with cells wrapped onto 3+ lines
  const lines = el => { const cs = getComputedStyle(el), range = document.createRange();
    range.selectNodeContents(el);  // the text's own height, not the row's
    return range.getBoundingClientRect().height / (parseFloat(cs.lineHeight) || 1.2 * parseFloat(cs.fontSize)); };
  const tables = Array.from(column.querySelectorAll('.cell_output table')).filter(visible).map(t => {
    const wrapped = Array.from(t.querySelectorAll('td, th')).filter(cell => visible(cell) && lines(cell) > 2.5);
    const box = (t.closest('.cell') || column).getBoundingClientRect();  // a full-width cell may use the margin
    return {width: Math.round(t.getBoundingClientRect().width), column: Math.round(box.width),
            wrapped: wrapped.length, example: wrapped.length ? describe(wrapped[0]) : '',
            head: text(t).slice(0, 50).replace(/\\s+/g, ' ')}; });
  // printed text in cell outputs that scrolls sideways: a reader has to scroll to read the line ends
  const wide_text = Array.from(column.querySelectorAll('.cell_output pre')).filter(visible)
    .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
    .map(pre => ({scroll: pre.scrollWidth, box: pre.clientWidth,
                  line: (pre.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), ''))
                          .trim().slice(0, 60)}));
  done({
    tables: tables,
    wide_text: wide_text,
    images: imgs.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0,
                              output: !!img.closest('.cell_output'),
                              hidden: !!img.closest('details:not([open])')})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    resources: Array.from(document.querySelectorAll('link[href][rel~="stylesheet"], script[src]'))
                 .map(e => e.href || e.src),
    tracebacks: Array.from(document.querySelectorAll('.cell_output .output.traceback')).map(text),
    stderr: Array.from(document.querySelectorAll('.cell_output .output.stderr')).map(text),
    problems: Array.from(document.querySelectorAll('.system-message, .problematic')).map(text),
    title: text(document.querySelector('h1') || document.body).split('\\n')[0],
    math: {elements: maths.length, typeset: document.querySelectorAll('mjx-container').length,
           raw: maths.filter(m => /\\\\[(\\[]/.test(m.textContent)).map(m => m.textContent.trim().slice(0, 80)),
           errors: Array.from(document.querySelectorAll('mjx-merror'))
                     .map(e => e.getAttribute('data-mjx-error') || text(e)).slice(0, 5)},
    search_boxes: Array.from(document.querySelectorAll(SEARCH))
                    .filter(e => visible(e) && !e.closest('.bd-search-container') &&
                                 !(e.matches('input') && e.closest('.search-button-field, .search-button')))
                    .map(describe),
    width: window.innerWidth,
    page_overflow: document.documentElement.scrollWidth - window.innerWidth,
    overflow: overflow.map(el => describe(el) + ' ' + Math.round(el.getBoundingClientRect().left - c.left) + '..' +
                                 Math.round(el.getBoundingClientRect().right - c.left) + ' px of ' + Math.round(c.width)
                                 + (el.scrollWidth > el.clientWidth + 1 ? ', scrolls ' + el.scrollWidth + ' px' : '')),
  });
});
"""

_FIGURE_VISIBLE = """
const img = arguments[0];
img.scrollIntoView({block: 'center'});
const r = img.getBoundingClientRect(), s = getComputedStyle(img);
return {w: r.width, h: r.height, shown: s.display !== 'none' && s.visibility !== 'hidden' && +s.opacity > 0,
        loaded: img.complete && img.naturalWidth > 0,
        onscreen: r.bottom > 0 && r.top < window.innerHeight};
"""


class Report:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, ok: bool, page: str, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{page}: {what}" + (f" ({detail})" if detail else ""))
            print(f"FAIL {self.failed[-1]}", flush=True)
        return ok


def check_page(browser, url: str, page: Path, html_root: Path, report: Report, shots: Path | None,
               source: Path = ROOT):
    name = str(page.relative_to(html_root))
    browser.get(url)
    facts = browser.execute_async_script(_PAGE_FACTS, SEARCH_CONTROLS, OVERFLOW_EXEMPT)
    report.check(not facts["tracebacks"], name, "error output (traceback) in a cell",
                 facts["tracebacks"][0][:200] if facts["tracebacks"] else "")
    bad_stderr = [t for t in facts["stderr"] if stderr_is_error(t)]
    report.check(not bad_stderr, name, "error in a stderr output", bad_stderr[0][:200] if bad_stderr else "")
    report.check(not facts["problems"], name, "unresolved reference or docutils error rendered",
                 "; ".join(facts["problems"])[:200])
    broken_imgs = [i["src"] for i in facts["images"] if not i["ok"]]
    report.check(not broken_imgs, name, f"{len(broken_imgs)} image(s) did not load", ", ".join(broken_imgs)[:300])
    problems = sorted({f"{u} -> {p}" for u in facts["links"] + facts["resources"]
                       if (p := link_problem(u, url, html_root))})
    report.check(not problems, name, f"{len(problems)} broken local link(s)", "; ".join(problems[:5]))
    origin = urlsplit(url).netloc
    logs = [m for e in browser.get_log("browser") if e["level"] == "SEVERE" and origin in (m := e["message"])
            and is_browser_error(m)]
    report.check(not logs, name, "the browser logged errors about local files", "; ".join(logs[:3])[:300])

    math = facts["math"]
    if math["elements"]:
        report.check(math["typeset"] > 0 and not math["raw"], name, "mathematics not typeset",
                     f"{math['typeset']} MathJax outputs for {math['elements']} math elements; "
                     f"{len(math['raw'])} still raw TeX" + (f": {math['raw'][0]}" if math["raw"] else ""))
        report.check(not math["errors"], name, "TeX errors in typeset math", "; ".join(math["errors"])[:300])
    remote = sorted({u for u in facts["resources"] if urlsplit(u).netloc != origin and re.search("mathjax|katex", u, re.I)}
                    | set(remote_math(page.read_text(encoding="utf-8", errors="replace"))))
    report.check(not remote, name, "math typesetter loaded from another host", ", ".join(remote)[:300])
    report.check(len(facts["search_boxes"]) == 1, name, f"{len(facts['search_boxes'])} search boxes, not one",
                 "; ".join(facts["search_boxes"])[:300])
    report.check(facts["width"] != DESKTOP[0] or (not facts["overflow"] and facts["page_overflow"] <= 1), name,
                 f"main column overflows sideways at {facts['width']} px",
                 (f"page {facts['page_overflow']} px wider than the window; " if facts["page_overflow"] > 1 else "")
                 + "; ".join(facts["overflow"][:4])[:400])
    report.check(facts["width"] == DESKTOP[0], name, f"window {facts['width']} px wide, not {DESKTOP[0]}")
    unreadable = [f"table \"{t['head']}\": " + (f"{t['width']} px wide in a {t['column']} px column"
                                                if t["width"] > t["column"] + 1 else
                                                f"{t['wrapped']} cell(s) wrapped onto 3+ lines, e.g. {t['example']}")
                  for t in facts["tables"] if t["width"] > t["column"] + 1 or t["wrapped"]]
    report.check(facts["width"] != DESKTOP[0] or not unreadable, name,
                 f"{len(unreadable)} results table(s) not readable at a glance at {facts['width']} px",
                 "; ".join(unreadable[:3])[:400])

    wide = facts["wide_text"]
    report.check(facts["width"] != DESKTOP[0] or not wide, name,
                 f"{len(wide)} printed output(s) scroll sideways at {facts['width']} px",
                 "; ".join(f"{w['scroll']} px in a {w['box']} px box: \"{w['line']}\"" for w in wide[:3])[:400])

    expected = notebook_images(page, html_root, source)
    if expected is not None:  # a chapter
        figures = [i for i in facts["images"] if i["output"] and not i["hidden"]]
        report.check(len(figures) >= max(1, expected), name, "figures of the notebook missing",
                     f"{len(figures)} on the page, {expected} in the notebook")
        from selenium.webdriver.common.by import By

        hidden = []
        for img in browser.find_elements(By.CSS_SELECTOR, ".cell_output img"):
            state = browser.execute_script(_FIGURE_VISIBLE, img)
            if not (state["shown"] and state["loaded"] and state["onscreen"] and state["w"] >= 50 and state["h"] >= 50):
                hidden.append(f"{img.get_attribute('src').rsplit('/', 1)[-1][:16]}: {state}")
        report.check(not hidden, name, f"{len(hidden)} figure(s) not visible", "; ".join(hidden[:3]))
    if shots is not None:
        take_screenshots(browser, shots, page.relative_to(html_root))
    return facts


def _viewport(browser, size: tuple[int, int], mobile: bool = False):
    """Emulate a viewport of ``size`` CSS px (it stays for the pages loaded next)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def take_screenshots(browser, shots: Path, rel: Path):
    """The first screen of the page at the desktop width, then at a phone's, under shots/desktop and shots/phone."""
    for kind, size, mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        target = shots / kind / screenshot_name(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        _viewport(browser, size, mobile)
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)  # the theme lays the page out again for the new width
        browser.save_screenshot(str(target))
    _viewport(browser, DESKTOP)


def check_search(browser, base: str, html_root: Path, chapters: list[Path], report: Report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if not chapters:
        report.check(False, "search.html", "no chapter page to search for")
        return
    page = chapters[-1]
    title = (html_root / page).read_text(encoding="utf-8")
    h1 = re.sub(r"<[^>]+>", " ", re.search(r"<h1[^>]*>(.*?)</h1>", title, re.S).group(1))
    word = max(re.findall(r"[A-Za-z]{4,}", h1), key=len).lower()
    # as a reader does: on a chapter, the page's one search box (a field, or a button that opens one)
    browser.get(urljoin(base, page.as_posix()))
    boxes = [b for b in browser.find_elements(By.CSS_SELECTOR, SEARCH_CONTROLS) if b.is_displayed()]
    if not report.check(len(boxes) >= 1, str(page), "no visible search box to search with"):
        return
    box = boxes[0]
    if box.tag_name != "input":
        box.click()
        try:
            WebDriverWait(browser, 5, poll_frequency=0.1).until(
                lambda b: [f for f in b.find_elements(By.CSS_SELECTOR, "input[type=search], input[name=q]")
                           if f.is_displayed()])
        except Exception:
            report.check(False, str(page), "the search box opened no search field")
            return
        box = next(f for f in browser.find_elements(By.CSS_SELECTOR, "input[type=search], input[name=q]")
                   if f.is_displayed())
    box.clear()
    box.send_keys(word, Keys.ENTER)
    try:
        WebDriverWait(browser, SEARCH_TIMEOUT, poll_frequency=0.25).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#search-results ul.search li"))
    except Exception:
        report.check(False, "search.html", f"no results for '{word}' after {SEARCH_TIMEOUT} s")
        return
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")]
    report.check(any(str(page.with_suffix("")) in (h or "") for h in hrefs), "search.html",
                 f"results for '{word}' do not include {page}", ", ".join(hrefs[:5]))
    print(f"search: '{word}' -> {len(hrefs)} result link(s)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    p.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    p.add_argument("--source", type=Path, default=ROOT, help="folder the chapters' notebooks are in (chapters/)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--driver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    args = p.parse_args(argv)
    html_root = args.html.resolve()
    if not (html_root / "index.html").is_file():
        print(f"no built book in {html_root}: run `make book` first", file=sys.stderr)
        return 2
    for exe, pkg in ((args.chromium, "chromium"), (args.driver, "chromium-driver")):
        if not Path(exe).is_file():
            print(f"{exe} not found: install the Debian package {pkg} (apt-get install {pkg})", file=sys.stderr)
            return 2
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("selenium is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    shutil.rmtree(args.screenshots, ignore_errors=True)
    args.screenshots.mkdir(parents=True)
    all_pages = pages(html_root)
    chapters = [q.relative_to(html_root) for q in all_pages if notebook_images(q, html_root, args.source) is not None]
    report = Report()
    start = time.monotonic()
    with Server(html_root) as server, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = start_browser(args.chromium, args.driver, profile)
        _viewport(browser, DESKTOP)
        try:
            print(f"serving {html_root} at {server.url}; {len(all_pages)} pages, {len(chapters)} chapters", flush=True)
            for page in all_pages:
                rel = page.relative_to(html_root)
                t0 = time.monotonic()
                check_page(browser, urljoin(server.url, rel.as_posix()), page, html_root, report, args.screenshots,
                           args.source)
                print(f"  {rel} ({time.monotonic() - t0:.1f} s)", flush=True)
            check_search(browser, server.url, html_root, chapters, report)
        finally:
            browser.quit()
    shots = sorted(q.relative_to(args.screenshots).as_posix() for q in args.screenshots.rglob("*.png"))
    print(f"{len(shots)} screenshots in {args.screenshots} (desktop/ and phone/)")
    print(f"browser test took {time.monotonic() - start:.0f} s")
    print(f"{report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
