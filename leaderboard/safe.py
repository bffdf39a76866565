"""Untrusted text, shown as text.

Intervention names, labels, authors, descriptions and links come from submissions
and from whoever published to a store. They reach the page through three doors, and
each gets its own escaping:

* Markdown components: :func:`md` escapes HTML and Markdown syntax, so
  ``<script>`` or ``[x](javascript:...)`` is shown literally;
* Plotly text (tick labels, hover text), which understands a few HTML tags:
  :func:`plot_text` turns ``<`` ``>`` ``&`` into entities that Plotly shows as text;
* Dataframe cells: plain strings in columns of datatype ``str``, which Gradio renders
  as text; :func:`cell` only flattens values to one line.

A link is shown as escaped text, never as a live anchor, and only when it is http(s).
"""

from __future__ import annotations

import html
import re
from typing import Any

# Markdown punctuation, backslash-escaped first; then HTML escaping turns < > & " ' into entities
# (">" is left to HTML escaping: "\&gt;" would show the entity itself).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md(value: Any) -> str:
    """``value`` as literal text inside Markdown (no HTML, no Markdown formatting, one line)."""
    text = " ".join(str("" if value is None else value).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=True)


def plot_text(value: Any) -> str:
    """``value`` as literal text inside Plotly labels and hover text."""
    return html.escape(str("" if value is None else value), quote=False)


def cell(value: Any) -> str:
    """A one-line string for a Dataframe cell (Gradio shows ``str`` columns as text)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(cell(v) for v in value)
    return " ".join(str(value).split())


def link_text(value: Any) -> str:
    """An http(s) link as escaped literal text; anything else is reported, not linked."""
    text = cell(value)
    if not re.match(r"^https?://\S+$", text):
        return md(f"(not an http link: {text})") if text else ""
    return f"`{text.replace('`', '')}`"
