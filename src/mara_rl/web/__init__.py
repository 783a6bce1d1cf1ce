"""Self-contained HTML pages: ``mara explore`` and ``mara diagnose --html``.

A page is one file with its styles, scripts and data inline: no server, no network, it opens from
disk in any browser. The scripts live beside this module (``targets.js`` mirrors the core's target
formulas for the explorer; ``explorer.js`` and ``diagnose.js`` draw the two pages).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

ASSETS = ("style.css", "common.js", "targets.js", "explorer.js", "diagnose.js")


def asset(name: str) -> str:
    """The text of one of the bundled ``ASSETS``."""
    if name not in ASSETS:
        raise ValueError(f"no page asset named {name!r}")
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_page(title: str, body: str, data: dict, scripts: tuple[str, ...]) -> str:
    """One HTML document: ``body`` (HTML), ``data`` as JSON in ``<script id="page-data">`` and the named
    ``scripts`` from ``ASSETS`` inline, in order. ``data`` must be JSON-ready (no NaN or inf)."""
    # "<" only occurs inside JSON strings, where \u003c means the same: a prompt holding "</script>"
    # cannot end the element.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{asset('style.css')}</style>",
        "</head><body>",
        body,
        f'<script type="application/json" id="page-data">{payload}</script>',
        *(f"<script>{asset(name)}</script>" for name in scripts),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_page(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` (parents created), atomically enough for a browser reload."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
