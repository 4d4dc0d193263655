"""The API reference in docs/ lists exactly the public names of each public namespace."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACES = (
    "operators",
    "solvers",
    "nn",
    "datasets",
    "training",
    "fem",
    "metrics",
    "reconstruction",
    "testing",
)


def documented(name: str) -> set[str]:
    """The entries of the autosummary tables of ``docs/api/NAME.rst``."""
    text = (ROOT / "docs" / "api" / f"{name}.rst").read_text()
    entries = set()
    for block in re.findall(r"\.\. autosummary::\n((?:\n|   .*\n)*)", text):
        entries |= {
            line.strip()
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith(":")
        }
    return entries


@pytest.mark.parametrize("name", NAMESPACES)
def test_api_reference_lists_the_public_names(name):
    module = importlib.import_module(f"physnet.{name}")
    public = set(module.__all__)
    listed = documented(name)
    assert not public - listed, (
        f"physnet.{name}.__all__ names missing from docs/api/{name}.rst: {sorted(public - listed)}"
    )
    assert not listed - public, (
        f"docs/api/{name}.rst lists names that physnet.{name}.__all__ does not export: "
        f"{sorted(listed - public)}"
    )


def test_api_index_links_every_namespace():
    index = (ROOT / "docs" / "api" / "index.rst").read_text()
    for name in ("physnet", *NAMESPACES):
        assert re.search(rf"^   {name}$", index, flags=re.MULTILINE), name


def test_every_example_has_a_title_for_the_gallery():
    # sphinx-gallery takes an example's title from an underlined first docstring line.
    for script in sorted((ROOT / "examples").glob("*.py")):
        lines = script.read_text().splitlines()
        assert lines[0].startswith('"""') and re.fullmatch(r"=+", lines[1]), (
            f"{script.relative_to(ROOT)}: the docstring must open with a title underlined "
            f"with '=' (the gallery page's title)"
        )
        assert len(lines[1]) >= len(lines[0]) - 3, f"{script.name}: underline too short"
