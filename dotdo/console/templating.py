"""The console's Jinja2 environment (autoescaped HTML) and its filters."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from starlette.templating import Jinja2Templates

__all__ = ["templates"]

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["urlpath"] = lambda value: quote(str(value), safe="/")
templates.env.filters["urlpart"] = lambda value: quote(str(value), safe="")
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, default=repr)
