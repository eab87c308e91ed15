"""Signing in (a registry user, or the operator with the admin token) and out."""

from __future__ import annotations

import hmac

from aiohttp import web

from console.guards import CONFIG
from console.oci import LoginFailed
from console.render import render
from console.sessions import CODEC, SESSION
from console.state import REGISTRIES


def _next(value: object) -> str:
    target = str(value or "/")
    # Only paths of this console: never an open redirect.
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def signin_form(request: web.Request) -> web.Response:
    needs = await request.app[REGISTRIES].requires_login()
    return render(request, "signin.html", next=_next(request.query.get("next")), needs_login=needs)


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    target = _next(form.get("next"))
    codec = request.app[CODEC]
    token = str(form.get("admin_token", ""))
    if token:
        configured = request.app[CONFIG].admin_token
        if not configured or not hmac.compare_digest(token.encode(), configured.encode()):
            return _refused(request, target, "wrong admin token")
        request[SESSION] = codec.signed_in(admin=True)
        raise web.HTTPSeeOther(target)
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    if not user or not password:
        return _refused(request, target, "give a username and password, or the admin token")
    try:
        await request.app[REGISTRIES].check_login(user, password)
    except LoginFailed as error:
        return _refused(request, target, str(error))
    request[SESSION] = codec.signed_in(user=user, password=password)
    raise web.HTTPSeeOther(target)


def _refused(request: web.Request, target: str, why: str) -> web.Response:
    return render(request, "signin.html", 401, next=target, error=why, needs_login=True)


async def signout(request: web.Request) -> web.StreamResponse:
    # The old session is dropped whole, CSRF token included.
    request[SESSION] = request.app[CODEC].signed_in()
    raise web.HTTPSeeOther("/")
