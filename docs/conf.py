"""Sphinx configuration of physnet's documentation (``make docs``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a source checkout documents itself, installed or not

import physnet  # noqa: E402

project = "physnet"
author = "physnet developers"
copyright = "physnet developers"
release = physnet.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"

# --- API reference: autosummary pages from the docstrings (numpydoc style) ---------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc Parameters sections say it in words
numpydoc_show_class_members = False  # the class template lists the members once
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# --- the example gallery (examples/*.py) ---------------------------------------------------
# The examples are not run by default: `make docs` (and CI) render their code and
# docstrings; `make docs-gallery` runs every example and embeds its figures.
run_examples = os.environ.get("PHYSNET_DOCS_RUN_EXAMPLES", "0") not in ("", "0", "false")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/.*\.py$" if run_examples else r"^$",
    "plot_gallery": run_examples,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "write_computation_times": run_examples,
}

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"physnet {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False


# --- `physnet COMMAND --help`, rendered from the parser itself -------------------------------
def setup(app):
    from docutils import nodes
    from sphinx.util.docutils import SphinxDirective

    class PhysnetHelp(SphinxDirective):
        """``.. physnet-help:: COMMAND``: the help text of ``physnet COMMAND``."""

        required_arguments = 1

        def run(self):
            from physnet.cli import build_parser

            os.environ["COLUMNS"] = "92"  # argparse wraps at the terminal width
            parser = build_parser()
            subparsers = next(action for action in parser._actions if action.dest == "command")
            text = subparsers.choices[self.arguments[0]].format_help()
            return [nodes.literal_block(text, text, language="text")]

    app.add_directive("physnet-help", PhysnetHelp)
    return {"parallel_read_safe": True}
