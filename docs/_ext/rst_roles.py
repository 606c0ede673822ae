"""A griffe extension for the API reference: the docstrings of ``dj_cqrs`` are written with
Sphinx roles (``:func:`wait_for```, ``:class:`~dj_cqrs.x.Y```) and ``::`` literal blocks, which
Markdown would show as they are. This rewrites them to Markdown code spans and plain colons
before mkdocstrings renders the docstring. It changes only the rendered text, not the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(\S)::$", re.M)


def _target(text: str) -> str:
    """``~a.b.C`` -> ``C``; ``title <a.b.C>`` -> ``title``; ``a.b.C`` stays."""
    titled = re.fullmatch(r"(.+?)\s*<[^>]+>", text)
    if titled:
        return titled.group(1)
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text


def markdown(docstring: str) -> str:
    text = _ROLE.sub(lambda match: f"`{_target(match.group(1))}`", docstring)
    return _LITERAL_BLOCK.sub(r"\1:", text)


class SphinxRolesToMarkdown(griffe.Extension):
    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
