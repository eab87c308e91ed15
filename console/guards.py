"""Who may see the admin pages: the operator signed in with the admin token (or anyone, when
no admin token is configured: then the gRPC APIs themselves are open)."""

from __future__ import annotations

from aiohttp import web

from console.config import ConsoleConfig
from console.sessions import current

CONFIG = web.AppKey("console_config", ConsoleConfig)


class AdminRequired(Exception):
    """The page is for the operator."""


def admin_open(request: web.Request) -> bool:
    return not request.app[CONFIG].admin_token


def require_admin(request: web.Request) -> None:
    if not (admin_open(request) or current(request).admin):
        raise AdminRequired()
