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
- the search page works: typing a word from a chapter's title into the search field and pressing Enter
  lists results that include that chapter.

It saves a screenshot of the first screen of each chapter (and of the home page) to ``_build/screenshots/``.
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


# One script per page: every fact the checks need, after the images were asked to load.
_PAGE_FACTS = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(img => { img.loading = 'eager'; });
Promise.all(imgs.map(img => img.decode().catch(() => null))).then(() => {
  const text = el => (el.innerText || el.textContent || '').trim();
  done({
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
    facts = browser.execute_async_script(_PAGE_FACTS)
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
            browser.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.2)
            browser.save_screenshot(str(shots / f"{page.stem}.png"))
    return facts


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
    browser.get(urljoin(base, "search.html"))
    field = next((f for f in browser.find_elements(By.CSS_SELECTOR, ".bd-search-container form.bd-search input, "
                                                                      "form.bd-search input") if f.is_displayed()), None)
    if not report.check(field is not None, "search.html", "no visible search field"):
        return
    field.clear()
    field.send_keys(word, Keys.ENTER)
    try:
        WebDriverWait(browser, 30, poll_frequency=0.25).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#search-results ul.search li"))
    except Exception:
        report.check(False, "search.html", f"no results for '{word}' after 30 s")
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
        try:
            print(f"serving {html_root} at {server.url}; {len(all_pages)} pages, {len(chapters)} chapters", flush=True)
            for page in all_pages:
                rel = page.relative_to(html_root)
                t0 = time.monotonic()
                shots = args.screenshots if rel in chapters else None
                check_page(browser, urljoin(server.url, str(rel)), page, html_root, report, shots, args.source)
                if rel.as_posix() == "book/intro.html":
                    browser.save_screenshot(str(args.screenshots / "intro.png"))
                print(f"  {rel} ({time.monotonic() - t0:.1f} s)", flush=True)
            check_search(browser, server.url, html_root, chapters, report)
        finally:
            browser.quit()
    shots = sorted(q.name for q in args.screenshots.glob("*.png"))
    print(f"screenshots in {args.screenshots}: {', '.join(shots)}")
    print(f"browser test took {time.monotonic() - start:.0f} s")
    print(f"{report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
