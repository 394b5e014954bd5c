"""The gallery page: one HTML shell (no data in it) whose script asks the JSON routes for the cards."""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from string import Template
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"


@functools.cache
def _template() -> Template:
    return Template((STATIC / "page.html").read_text(encoding="utf-8"))


def render(title: str, config: dict[str, Any], static_url: str) -> str:
    """The page for ``config`` (the JSON route, scope, links), its assets under ``static_url``."""
    # In a <script type="application/json">, only "</" could end the element early.
    data = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
    return _template().substitute(
        title=html.escape(title), config=data, static=html.escape(static_url.rstrip("/"), quote=True)
    )
