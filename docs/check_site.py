"""Check the built site as a reader would see it, offline, in a real headless browser.

Usage: ``python docs/check_site.py docs/_build/html [--no-browser]`` (``nox -s docs``
runs it; ``--no-browser`` runs checks 1 and 4 only, for a host without Chromium).

1. No page loads anything from another host: every script, stylesheet, image,
   font or frame in the HTML and CSS is served from the site itself.
2. The Theory page, opened in headless Chromium with every external fetch
   sent to a proxy that does not exist (127.0.0.1:9), has its math typeset by
   MathJax: one ``mjx-container`` per math element, and no raw TeX left.
3. The site search, opened as ``search.html?q=philox``, lists the stream spec.
4. The backend matrix page says of each backend what the verify JSON it was
   built from says: PASS in every cell of a backend that passed, FAIL where a
   cell failed, "not run" only for a backend verify skipped.

The site is served on the loopback interface only. Exits non-zero on failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # running as root in CI
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--proxy-server=127.0.0.1:9",  # nothing listens there: any fetch beyond loopback fails
    "--virtual-time-budget=20000",
    "--dump-dom",
]
EXTERNAL = re.compile(r"^(https?:)?//", re.IGNORECASE)
# (tag, attribute) pairs that make the browser fetch something while rendering the page.
FETCHING = {
    ("script", "src"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("video", "src"),
    ("audio", "src"),
    ("link", "href"),
}
LINK_RELS_FETCHED = {"stylesheet", "preload", "icon", "shortcut", "modulepreload", "prefetch", "manifest"}
RAW_TEX = ("\\frac", "\\mathbb", "\\operatorname", "\\(", "\\[", "$$")


class Collector(HTMLParser):
    """Fetched URLs, and the text outside MathJax output, scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[str] = []
        self.text: list[str] = []
        self.mjx = 0
        self.math_elements = 0
        self.search_links: list[str] = []
        self._skip = 0  # depth inside mjx-container / script / style
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, skipping, in ul.search)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for t, attr in FETCHING:
            if tag == t and a.get(attr):
                rels = set(a.get("rel", "").lower().split())
                if tag != "link" or rels & LINK_RELS_FETCHED:
                    self.fetched.append(a[attr])
        classes = a.get("class", "").split()
        if "math" in classes:
            self.math_elements += 1
        if tag == "mjx-container":
            self.mjx += 1
        in_search = (tag == "ul" and "search" in classes) or (bool(self._stack) and self._stack[-1][2])
        if in_search and tag == "a" and a.get("href"):
            self.search_links.append(a["href"])
        skipping = tag in ("mjx-container", "script", "style")
        self._skip += skipping
        if tag not in ("br", "img", "meta", "link", "input", "hr", "source", "wbr"):
            self._stack.append((tag, skipping, in_search))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            t, skipping, _ = self._stack.pop()
            self._skip -= skipping
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    return c


def check_offline_assets(site: Path) -> list[str]:
    problems = []
    for page in sorted(site.rglob("*.html")):
        for url in parse(page.read_text(encoding="utf-8")).fetched:
            if EXTERNAL.match(url):
                problems.append(f"{page.relative_to(site)} fetches {url} from another host")
    for css in sorted(site.rglob("*.css")):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text(encoding="utf-8", errors="replace")):
            if EXTERNAL.match(url):
                problems.append(f"{css.relative_to(site)} fetches {url} from another host")
    if not (site / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append("MathJax is not in the built site (_static/mathjax/tex-chtml.js)")
    return problems


class Served:
    """The site on a loopback port; records the paths the browser asked for."""

    def __init__(self, site: Path) -> None:
        self.requested: list[str] = []
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                served.requested.append(self.path)

        handler = functools.partial(Handler, directory=str(site))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Tables(HTMLParser):
    """The text of every table cell: tables, of rows, of cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.rows = []
            self.tables.append(self.rows)
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def check_matrix(page_html: str, verify: dict[str, object]) -> list[str]:
    """Problems where the matrix page disagrees with the verify JSON it was built from.

    The generated table is the page's first one headed "backend" (tables after
    it, such as results recorded on other machines, are not checked).
    """
    parser = Tables()
    parser.feed(page_html)
    generated = next((t for t in parser.tables if t and t[0][:1] == ["backend"]), [])
    rows = {r[0]: r[1:] for r in generated[1:] if r}
    backends = verify.get("backends")
    if not isinstance(backends, dict) or not backends:
        return ["backend matrix: the verify JSON names no backends"]
    problems = []
    for name, result in backends.items():
        cells = rows.get(name)
        status = result.get("status") if isinstance(result, dict) else None
        if cells is None:
            problems.append(f"backend matrix: no row for {name} (verify says {status})")
            continue
        text = " ".join(c for c in cells if c)
        if status == "pass" and ("not run" in text or not all(c.startswith("PASS") for c in cells)):
            problems.append(f"backend matrix: verify says {name} passed, the page says: {text}")
        elif status == "fail" and "FAIL" not in text:
            problems.append(f"backend matrix: verify says {name} failed, the page says: {text}")
        elif status == "skipped" and "not run" not in text:
            problems.append(f"backend matrix: verify skipped {name}, the page says: {text}")
        elif status not in ("pass", "fail", "skipped"):
            problems.append(f"backend matrix: verify's status for {name} is {status!r}")
    return problems


def chromium() -> str:
    given = os.environ.get("XDROP_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("check_site: chromium not found: install it (apt-get install chromium) or pass --no-browser")


def dump_dom(browser: str, url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium failed on {url} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def check_theory(browser: str, served: Served, site: Path) -> tuple[list[str], str]:
    source = parse((site / "theory.html").read_text(encoding="utf-8"))
    dom = parse(dump_dom(browser, f"{served.url}/theory.html"))
    text = "".join(dom.text)
    problems = []
    if source.math_elements == 0:
        problems.append("theory.html has no math elements to check")
    if dom.mjx < source.math_elements:
        problems.append(f"theory: {dom.mjx} mjx-container for {source.math_elements} math elements")
    raw = sorted({t for t in RAW_TEX if t in text})
    if raw:
        problems.append(f"theory: raw TeX left on the rendered page: {raw}")
    if not any(p.startswith("/_static/mathjax/tex-chtml.js") for p in served.requested):
        problems.append("theory: the browser never loaded MathJax from the site")
    note = f"theory: {dom.mjx} mjx-container for {source.math_elements} math elements, raw TeX left: {raw or 'none'}"
    return problems, note


def check_search(browser: str, served: Served) -> tuple[list[str], str]:
    dom = parse(dump_dom(browser, f"{served.url}/search.html?q=philox"))
    pages = sorted({link.split("?")[0].split("#")[0] for link in dom.search_links})
    problems = []
    if "stream-spec.html" not in pages:
        problems.append(f"search for 'philox' does not list stream-spec.html; results: {pages}")
    return problems, f"search 'philox' -> {pages}"


MATRIX_DATA = Path(__file__).resolve().parent / "_generated" / "backend_matrix.json"


def main(site_dir: str, browser_checks: bool = True) -> int:
    site = Path(site_dir).resolve()
    problems = check_offline_assets(site)
    matrix = check_matrix(
        (site / "backend-matrix.html").read_text(encoding="utf-8"), json.loads(MATRIX_DATA.read_text())
    )
    problems += matrix
    print(f"check_site: backend matrix page against {MATRIX_DATA.name}: {len(matrix)} problem(s)")
    if not browser_checks:
        print("check_site: SKIPPED the browser checks (MathJax typesetting, site search): --no-browser")
        for p in problems:
            print("FAIL:", p, file=sys.stderr)
        print("check_site: passed" if not problems else f"check_site: {len(problems)} problem(s)")
        return 1 if problems else 0
    browser = chromium()
    served = Served(site)
    try:
        theory, theory_note = check_theory(browser, served, site)
        search, search_note = check_search(browser, served)
    finally:
        served.close()
    problems += theory + search
    print(f"check_site: {theory_note}; {search_note}; {len(served.requested)} requests served by the site")
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    print("check_site: passed" if not problems else f"check_site: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-browser"]
    sys.exit(main(args[0] if args else "docs/_build/html", browser_checks="--no-browser" not in sys.argv[1:]))
