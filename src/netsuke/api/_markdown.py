"""Markdown for the dashboard, rendered safely on the server.

``render_markdown`` uses markdown-it-py's CommonMark preset with raw HTML **disabled**: any
``<tag>`` the model or the user writes is escaped and shown as text, never parsed. Links keep
markdown-it's own URL check (``javascript:``, ``vbscript:``, ``file:`` and non-image ``data:``
links are refused) and open with ``rel="noopener noreferrer nofollow"``. Tables and
strikethrough are on; images are shown as their alt text (a reply cannot make the browser
fetch anything).
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

__all__ = ["render_markdown"]


def _link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    return str(self.renderToken(tokens, idx, options, env))


def _image(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    return f'<span class="muted">[image: {escape(alt)}]</span>'


_md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])
_md.add_render_rule("link_open", _link_open)
_md.add_render_rule("image", _image)


def render_markdown(text: str) -> Markup:
    """``text`` (Markdown) as HTML that holds no markup from ``text`` itself."""
    return Markup(_md.render(text))  # html is off: markdown-it escapes any raw HTML
