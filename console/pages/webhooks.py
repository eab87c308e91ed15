"""Webhooks: list, add and edit (a new secret is shown once), test, deliveries, redeliver."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from console.admin import ACTIONS, BODY_FORMATS, WebhookForm, body_format_name, status_name
from console.guards import require_admin
from console.render import render
from console.state import OPERATIONS


def _form_page(request: web.Request, **context: Any) -> web.Response:
    return render(
        request, "webhook_form.html", actions=ACTIONS, formats=list(BODY_FORMATS), **context
    )


async def webhook_list(request: web.Request) -> web.Response:
    require_admin(request)
    hooks = await request.app[OPERATIONS].webhooks()
    return render(request, "webhooks.html", webhooks=hooks, format_name=body_format_name)


async def webhook_new(request: web.Request) -> web.Response:
    require_admin(request)
    return _form_page(request, webhook=None, format_name=body_format_name)


async def webhook_create(request: web.Request) -> web.Response:
    require_admin(request)
    form = WebhookForm.read(await request.post())
    created, secret = await request.app[OPERATIONS].create_webhook(form)
    # Shown in this answer only; never again (the list and edit pages show a count).
    return render(request, "webhook_secret.html", webhook=created, secret=secret, new=True)


async def webhook_edit(request: web.Request) -> web.Response:
    require_admin(request)
    hook = await request.app[OPERATIONS].webhook(request.match_info["id"])
    return _form_page(request, webhook=hook, format_name=body_format_name)


async def webhook_update(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    webhook_id = request.match_info["id"]
    await request.app[OPERATIONS].update_webhook(webhook_id, WebhookForm.read(await request.post()))
    raise web.HTTPSeeOther(f"/webhooks/{webhook_id}")


async def webhook_rotate(request: web.Request) -> web.Response:
    require_admin(request)
    webhook_id = request.match_info["id"]
    secret = await request.app[OPERATIONS].rotate_secret(webhook_id)
    hook = await request.app[OPERATIONS].webhook(webhook_id)
    return render(request, "webhook_secret.html", webhook=hook, secret=secret, new=False)


async def webhook_delete(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    await request.app[OPERATIONS].delete_webhook(request.match_info["id"])
    raise web.HTTPSeeOther("/webhooks")


async def webhook_test(request: web.Request) -> web.Response:
    require_admin(request)
    webhook_id = request.match_info["id"]
    ops = request.app[OPERATIONS]
    attempt = await ops.test_webhook(webhook_id)
    hook = await ops.webhook(webhook_id)
    deliveries, next_token = await ops.deliveries(webhook_id, "", "")
    return render(
        request,
        "webhook.html",
        webhook=hook,
        deliveries=deliveries,
        next_token=next_token,
        status="",
        test=attempt,
        status_name=status_name,
        format_name=body_format_name,
    )


async def webhook_detail(request: web.Request) -> web.Response:
    require_admin(request)
    webhook_id = request.match_info["id"]
    ops = request.app[OPERATIONS]
    status = request.query.get("status", "")
    hook = await ops.webhook(webhook_id)
    deliveries, next_token = await ops.deliveries(webhook_id, status, request.query.get("page", ""))
    return render(
        request,
        "webhook.html",
        webhook=hook,
        deliveries=deliveries,
        next_token=next_token,
        status=status,
        test=None,
        status_name=status_name,
        format_name=body_format_name,
    )


async def delivery_detail(request: web.Request) -> web.Response:
    require_admin(request)
    delivery = await request.app[OPERATIONS].delivery(request.match_info["id"])
    return render(request, "delivery.html", delivery=delivery, status_name=status_name)


async def delivery_redeliver(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    delivery_id = request.match_info["id"]
    await request.app[OPERATIONS].redeliver(delivery_id)
    raise web.HTTPSeeOther(f"/deliveries/{delivery_id}?" + urlencode({"redelivered": "1"}))


def routes(r: web.UrlDispatcher) -> None:
    r.add_get("/webhooks", webhook_list)
    r.add_get("/webhooks/new", webhook_new)
    r.add_post("/webhooks", webhook_create)
    r.add_get("/webhooks/{id}", webhook_detail)
    r.add_get("/webhooks/{id}/edit", webhook_edit)
    r.add_post("/webhooks/{id}", webhook_update)
    r.add_post("/webhooks/{id}/rotate", webhook_rotate)
    r.add_post("/webhooks/{id}/delete", webhook_delete)
    r.add_post("/webhooks/{id}/test", webhook_test)
    r.add_get("/deliveries/{id}", delivery_detail)
    r.add_post("/deliveries/{id}/redeliver", delivery_redeliver)
