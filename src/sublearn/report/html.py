"""A Markdown report as one offline HTML page: the same text, its tables, and its charts inlined as data URIs (the
page opens from a mail attachment or a CI artifact with no server and no network)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_STYLE = """body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; } th, td { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; } img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; } pre { background: #f4f4f4; padding: 8px; overflow: auto; }
blockquote { border-left: 4px solid #c33; margin: 1em 0; padding: 0.3em 1em; background: #fff6f6; }"""


def _inline(match: re.Match, base: Path) -> str:
    src = html.unescape(match.group(2))
    p = base / src
    if "/" in src.replace("\\", "/").lstrip("./") or not p.is_file() or p.suffix.lower() not in (".png", ".svg"):
        return match.group(0)  # only charts written beside the report are inlined
    kind = "image/svg+xml" if p.suffix.lower() == ".svg" else "image/png"
    return f'{match.group(1)}"data:{kind};base64,{base64.b64encode(p.read_bytes()).decode()}"'


def markdown_page(text: str, base: Path, title: str) -> str:
    """``text`` (Markdown) as a self-contained HTML page; images named relative to ``base`` are inlined."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    body = re.sub(r'(<img src=)"([^"]+)"', lambda m: _inline(m, base), body)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n")
