"""The documentation site: it builds strictly, its API reference covers the public names, its tables stay true.

``mkdocs build --strict`` fails on any warning: a page missing from the
navigation, a broken link, a cross-reference to an object the API reference
does not render, a docstring mkdocstrings cannot parse. The docs pages'
``>>>`` examples run as doctests (``--doctest-glob=*.md`` in pyproject).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import zlib

import pytest

import jaxtrack
from jaxtrack import callbacks
from jaxtrack.trackers.config import TrackerConfig

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0 is not our output
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return out


def _inventory(site: pathlib.Path) -> set[str]:
    """The object names in the site's ``objects.inv`` (Sphinx's format: four header lines, then zlib)."""
    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]
    lines = zlib.decompress(body).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines}


def test_the_site_builds_strictly_with_every_page(site):
    for page in DOCS.rglob("*.md"):
        built = site / page.relative_to(DOCS).with_suffix("") / "index.html"
        if page.name == "index.md":
            built = site / page.relative_to(DOCS).parent / "index.html"
        assert built.exists(), f"{page.relative_to(ROOT)} was not built"


def test_the_api_reference_renders_every_public_name(site):
    names = _inventory(site)
    public = [(jaxtrack, name) for name in jaxtrack.__all__] + [(callbacks, name) for name in callbacks.__all__]
    missing = []
    for module, name in public:
        obj = getattr(module, name)
        if isinstance(obj, type(jaxtrack)):
            continue  # a module re-exported for convenience (jaxtrack.callbacks): its members are listed
        canonical = f"{obj.__module__}.{obj.__qualname__}"
        if not {f"{module.__name__}.{name}", canonical} & names:
            missing.append(f"{module.__name__}.{name} ({canonical})")
    assert not missing, f"not in the API reference: {missing}"


def test_pages_that_include_the_readme_show_its_text(site):
    """The guarantees and performance tables, and the two commands, live in the README and are included."""
    readme = (ROOT / "README.md").read_text()
    for page, marker in [("guarantees", "start:guarantees"), ("performance", "start:performance")]:
        assert marker in readme
        html = (site / page / "index.html").read_text()
        assert "--8&lt;--" not in html and "--8<--" not in html, f"{page}: a snippet was not included"
    assert "test_bad_input.py" in (site / "guarantees" / "index.html").read_text()
    assert "bench_logging.py" in (site / "performance" / "index.html").read_text()
    assert "make demo" in (site / "getting-started" / "index.html").read_text()


@pytest.mark.parametrize("type_name", ["local", "tensorboard", "wandb", "console", "json_logger"])
def test_the_trackers_page_lists_every_option_of_each_backend(type_name):
    """Each backend's section has a row for every field of its config, so the page cannot fall behind."""
    page = (DOCS / "trackers.md").read_text()
    section = re.search(rf"^## `{type_name}`.*?(?=^## |\Z)", page, flags=re.S | re.M)
    assert section is not None, f"trackers.md has no section for type {type_name!r}"
    config = TrackerConfig.get_choice_class(type_name)
    for field in dataclasses.fields(config):
        assert re.search(rf"^\|[^|\n]*`{field.name}`", section.group(0), flags=re.M), (
            f"trackers.md's {type_name!r} table has no row for option {field.name!r}"
        )
