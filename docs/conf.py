"""Sphinx configuration of the gapfill documentation site.

Build it (offline: no intersphinx, no remote assets) with::

    pip install -e ".[docs]" && sphinx-build -W docs docs/_build/html

The example notebooks are rendered with their committed outputs (myst-nb does not
execute them; the test suite does, see ``tests/test_docs.py``). The recipe reference
is generated from the recipe schema (:mod:`gapfill.recipe`) at every build.
"""

from __future__ import annotations

import sys
from pathlib import Path

import sphinx_autosummary_accessors

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document this checkout, whatever is installed

import gapfill  # noqa: E402
from gapfill import recipe  # noqa: E402

project = "gapfill"
author = "the gapfill developers"
copyright = "the gapfill developers"  # noqa: A001 - Sphinx's name
release = version = gapfill.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autosummary_accessors",
]
templates_path = ["_templates", sphinx_autosummary_accessors.templates_path]
exclude_patterns = [
    "_build",
    "examples/*.py",             # jupytext sources of the committed notebooks
    "generated/recipe_keys.md",  # included by recipes.md
    "**.ipynb_checkpoints",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# -- MyST and notebooks -----------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"      # the committed outputs; the tests execute the notebooks
nb_ipywidgets_js = {}          # no widget JavaScript from a CDN
nb_merge_streams = True

# -- API reference ------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# -- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "gapfill"
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 3,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_center": [],
    "footer_end": [],
    "navbar_end": ["theme-switcher"],
}
html_static_path = ["_static"]
html_css_files = ["gapfill.css"]
# Pages without sub-pages get no (empty) left sidebar.
html_sidebars = {"index": [], "examples/*": [], "recipes": [], "product": [], "methods": [],
                 "benchmarks": [], "video": [], "scale": [], "architecture": []}
html_show_sourcelink = False


def _recipe_keys(_app) -> None:
    """Write the table of every recipe key, generated from the recipe schema."""
    out = DOCS / "generated" / "recipe_keys.md"
    out.parent.mkdir(exist_ok=True)
    text = recipe.docs_markdown()
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app):
    """Generate the recipe reference before the sources are read."""
    app.connect("builder-inited", _recipe_keys)
