"""Sphinx configuration of the flask-cqlalchemy docs.

Build: ``make docs`` (installs the ``docs`` extra, then
``sphinx-build -W --keep-going -b html docs docs/_build/html``).
Pages are Markdown, read by MyST; the API reference comes from docstrings.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import flask_cqlalchemy  # noqa: E402

project = "flask-cqlalchemy"
author = "flask-cqlalchemy contributors"
copyright = "flask-cqlalchemy contributors"
release = flask_cqlalchemy.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

suppress_warnings = [
    # Markdown written by tools (docs/benchmarks/) may skip heading levels.
    "myst.header",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "furo"
html_title = f"flask-cqlalchemy {release}"
html_static_path: list[str] = []


# -- docs/benchmarks/ ----------------------------------------------------------------
# `make bench` writes its pages (results.md, ...) into docs/benchmarks/. The
# benchmarks page lists whichever of them exist, so the build is the same
# (and warning-free) before the first run and after it.

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
MARKER = "<!-- benchmark pages -->"


def _benchmark_pages() -> list[str]:
    pages = sorted(p.stem for p in BENCHMARKS.glob("*.md") if p.stem != "index")
    return sorted(pages, key=lambda name: name != "results")  # results first


def _list_benchmark_pages(app, docname, source):
    if docname != "benchmarks/index" or MARKER not in source[0]:
        return
    pages = _benchmark_pages()
    if pages:
        listing = "The latest run: [benchmark results](results.md).\n\n" if "results" in pages else ""
        listing += "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n"
    else:
        listing = "No results are in this build yet: run `make bench`, then rebuild the docs.\n"
    source[0] = source[0].replace(MARKER, listing)


def _always_relist(app, env, added, changed, removed):
    # The listing depends on files beside the page, not on the page itself.
    return ["benchmarks/index"] if "benchmarks/index" in env.found_docs else []


def setup(app):
    app.connect("source-read", _list_benchmark_pages)
    app.connect("env-get-outdated", _always_relist)
