"""Sphinx configuration: the API reference is autodoc on the *installed* package (the compiled
core included), docstrings in NumPy's format checked by numpydoc's validator; narrative pages are
MyST Markdown. Built in .ci/run with warnings as errors (python -m sphinx -W)."""

from __future__ import annotations

import re

import upweight

project = "upweight"
author = "the upweight developers"
copyright = "2026, the upweight developers"
release = version = upweight.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"upweight {release}"

autodoc_default_options = {"members": True, "member-order": "bysource", "undoc-members": True}
autodoc_typehints = "none"  # numpydoc's Parameters section carries the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every public function, class and method: a docstring, its parameters (all of them, and no others),
# what it returns, and an example (run by tests/test_docs.py as a doctest).
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "PR10", "RT01", "EX01"}


def _attributes() -> set[str]:
    """Properties and dataclass fields of the public classes: a docstring saying what they are
    (tests/test_docs.py checks that), no Parameters, Returns or Examples."""
    import dataclasses
    import importlib
    import inspect

    names = set()
    for modname in ("upweight", "upweight.networks", "upweight.dask"):
        module = importlib.import_module(modname)
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls):
                continue
            for klass in cls.__mro__:
                names |= {f"{modname}.{name}.{a}" for a, v in vars(klass).items() if isinstance(v, property)}
            if dataclasses.is_dataclass(cls):
                names |= {f"{modname}.{name}.{f.name}" for f in dataclasses.fields(cls)}
    return names


numpydoc_validation_exclude = {
    r"\.__init__$",  # the class docstring documents the constructor's parameters
    r"\.__\w+__$",
} | {re.escape(name) + "$" for name in _attributes()}
