"""The documentation builds with warnings as errors, every page of its nav is there, the API pages carry the real
docstrings, and the README stays a short front door."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import noisykd.detect

ROOT = Path(__file__).resolve().parents[1]
INSTALL_AND_DEMO = "python3 -m pip install torch==2.13.0 && python3 -m pip install -e . && noisykd demo"
INSTALL_AND_TEST = 'python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[test]" && python3 -m pytest -q'

pytest.importorskip("mkdocs", reason="the docs packages: pip install -e '.[docs]' (also in '.[test]')")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python]: pip install -e '.[docs]'")


def nav_pages(nav: list) -> list[str]:
    """Every Markdown path in mkdocs.yml's ``nav`` (nested sections flattened), in order."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def html_path(site: Path, page: str) -> Path:
    """Where mkdocs (directory URLs) writes ``page``: ``a/b.md`` -> ``a/b/index.html``, ``a/index.md`` -> itself."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


def text_of(page: Path) -> str:
    """The visible text of an HTML page, tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with ``mkdocs build --strict`` (any warning, e.g. a broken link, fails the build)."""
    out = tmp_path_factory.mktemp("site")
    # `python -m mkdocs` with this interpreter, so that the build uses the packages the tests import
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_every_nav_page_is_built(site):
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = nav_pages(nav)
    assert len(pages) >= 30 and "methods/bkd.md" in pages and "api/detect.md" in pages
    missing = [page for page in pages if not html_path(site, page).is_file()]
    assert not missing, f"nav pages without HTML: {missing}"
    # and no page of docs/ is left out of the nav (mkdocs only says so at INFO level)
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md") if "_ext" not in p.parts}
    assert on_disk == set(pages), f"pages not in the nav: {sorted(on_disk - set(pages))}"


def test_the_api_pages_carry_the_docstrings(site):
    page = text_of(html_path(site, "api/detect.md"))
    # the first line of the real docstring, and a sentence from its parameter descriptions
    summary = noisykd.detect.find_label_issues.__doc__.strip().splitlines()[0]
    assert summary == "Flag samples whose given label is probably wrong."
    assert summary in page
    assert "The given (possibly noisy) labels" in page
    # Sphinx roles are rendered (as links or code), never shown as raw reST
    raw = re.compile(r":(func|class|meth|attr|mod):`")
    leftovers = [p for p in site.joinpath("api").rglob("*.html") if raw.search(text_of(p))]
    assert not leftovers, f"raw reST roles on {leftovers}"
    assert 'href="#noisykd.detect.otsu_threshold"' in html_path(site, "api/detect.md").read_text()


def test_the_images_of_the_method_pages_are_in_the_site(site):
    for page in ["methods/modul.md", "methods/nrd.md", "cleaning.md"]:
        built = html_path(site, page)
        sources = re.findall(r'<img alt="[^"]*" src="([^"]+)"', built.read_text())
        assert sources, page
        for src in sources:
            assert (built.parent / src).resolve().is_file(), f"{page}: {src}"


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250
    first_screen = "\n".join(lines[:40])
    assert INSTALL_AND_DEMO in first_screen and INSTALL_AND_TEST in first_screen
    assert "#clean-your-own-data" in first_screen and "#train-a-robust-classifier" in first_screen
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:4] == ["## Quick start", "## Clean your own data", "## Train a robust classifier",
                            "## Which method when"]
    # CI runs the README's test command
    assert "python3 -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_links_to_pages_that_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(targets) > 15
    missing = sorted({t for t in targets if not (ROOT / t).is_file()})
    assert not missing, f"README links to missing pages: {missing}"
