"""Jinja2 templates (autoescaped) and the one way handlers render a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from console import format as fmt
from console.csrf import FIELD
from console.sessions import current

TEMPLATES = Path(__file__).parent / "templates"
ENV = web.AppKey("jinja_env", jinja2.Environment)
SETTINGS = web.AppKey("page_settings", dict)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        size=fmt.human_size,
        exact_size=fmt.exact_size,
        ago=fmt.human_time,
        exact_time=fmt.exact_time,
        short_digest=fmt.short_digest,
        platform=fmt.platform_name,
    )
    env.globals["query"] = lambda **params: urlencode({k: v for k, v in params.items() if v})
    env.globals["csrf_field"] = FIELD
    return env


def render(request: web.Request, template: str, code: int = 200, **context: Any) -> web.Response:
    session = current(request)
    page = (
        request.app[ENV]
        .get_template(template)
        .render(
            session=session,
            csrf_token=session.csrf,
            path=request.path,
            settings=request.app[SETTINGS],
            **context,
        )
    )
    return web.Response(text=page, status=code, content_type="text/html", charset="utf-8")
