"""Sphinx configuration of the anomalib-adaclip documentation (built like anomalib's own: MyST, myst-nb, book theme).

Build it with ``sphinx-build -W --keep-going -b html docs/source docs/_build/html`` (or ``make -C docs html``). The
build needs no network: intersphinx links to Python, torch, Lightning and anomalib are made only when
``ADACLIP_DOCS_INTERSPHINX=1`` asks for them (the inventories are downloaded then).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

DOCS_SOURCE = Path(__file__).resolve().parent
PROJECT_ROOT = DOCS_SOURCE.parents[1]
# The checkout's package first, so the API reference documents this tree even beside another installed copy.
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(DOCS_SOURCE / "_ext"))

project = "anomalib-adaclip"
author = "anomalib-adaclip developers"
copyright = "anomalib-adaclip developers; AdaCLIP: Cao et al., ECCV 2024"
release = importlib.import_module("anomalib_adaclip").__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and the notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings
    "sphinx_autodoc_typehints",  # type hints into the parameter descriptions
    "sphinx_copybutton",
    "sphinx.ext.viewcode",
    "adaclip_sphinx",  # the generated CLI reference, parameter and data set tables, notebook pages
]

if os.environ.get("ADACLIP_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
        "anomalib": ("https://anomalib.readthedocs.io/en/latest", None),
    }

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "reference/_generated", "**/.ipynb_checkpoints"]
templates_path: list[str] = []

# MyST
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# Notebooks are rendered as committed; nothing is executed at build time.
nb_execution_mode = "off"

# autodoc, napoleon and the type hints
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields of the class, so autodoc does not describe them twice
typehints_use_signature = False
typehints_document_rtype = True
always_document_param_types = False
# anomalib's batch dataclasses (which AuxiliaryBatch and AuxiliaryItem extend) annotate their fields with a name that
# only their own module's type checking defines; the inherited annotations cannot be resolved here.
suppress_warnings = ["sphinx_autodoc_typehints.forward_reference"]

# copy buttons leave prompts and console output out
copybutton_exclude = ".linenos, .gp, .go"

html_theme = "sphinx_book_theme"
html_title = "anomalib-adaclip"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
}
html_last_updated_fmt = ""
