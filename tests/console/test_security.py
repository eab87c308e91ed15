"""Security: attacker-controlled names, labels and annotations render inert; a cross-site POST
and a POST without the CSRF token are refused; admin pages refuse a plain user; a user sees
only what the access rules let them pull; the headers every page carries."""

from __future__ import annotations

import aiohttp

from tests.console.conftest import ADMIN_TOKEN, USERS, Console, basic
from tests.console.images import described_image
from tests.fixtures.images import make_artifact
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

SCRIPT = "<script>alert(1)</script>"
ATTR = '"onmouseover="alert(2)'
# A tag may hold neither < nor ": the most a tag can try is a name that looks like markup text.
EVIL_TAG = "x-onmouseover-alert"


async def test_attacker_controlled_text_is_inert(
    console: Console, console_registry: RegistryProcess
) -> None:
    labels = {f"evil{SCRIPT}": f"{ATTR} {SCRIPT}"}
    image = described_image(21, labels=labels, annotations={"note": f"{ATTR}{SCRIPT}"})
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, console_registry.url, basic("pusher"))
        await oci.push_image("team/xss", image, EVIL_TAG)
        await oci.push_image(
            "team/xss", make_artifact(image.manifest, "application/x-evil", b"e", {"n": SCRIPT})
        )
    await console.sign_in(admin_token=ADMIN_TOKEN)
    # The search box echoes the query, the error page the reference.
    for path in (
        "/manifest?repository=team/xss&reference=" + EVIL_TAG,
        "/repositories?q=" + aiohttp.helpers.quote(f"{ATTR}{SCRIPT}", safe=""),
        "/repository?name=team/xss",
    ):
        status, page = await console.get(path)
        assert status == 200, path
        assert "<script>alert" not in page, path
        assert '"onmouseover=' not in page, path
        assert 'onmouseover="alert' not in page, path
    _, page = await console.get("/manifest?repository=team/xss&reference=" + EVIL_TAG)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "&#34;onmouseover=&#34;alert(2)" in page
    # No inline script anywhere: the only script is the served file.
    assert page.count("<script") == 1 and '<script src="/static/console.js" defer>' in page


async def test_security_headers(console: Console) -> None:
    async with console.http.get(console.url + "/repositories") as response:
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_forms_need_the_csrf_token_and_the_same_origin(console: Console) -> None:
    await console.sign_in(admin_token=ADMIN_TOKEN)
    token = await console.csrf("/gc")
    form = {"mode": "dry-run"}
    # No token, a wrong one, and the right one from another site: all refused.
    status, _ = await console.post("/gc", form)
    assert status == 403
    status, _ = await console.post("/gc", {**form, "csrf_token": token + "x"})
    assert status == 403
    status, _ = await console.post(
        "/gc", {**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    status, _ = await console.post(
        "/gc", {**form, "csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403
    status, page = await console.post("/gc", {**form, "csrf_token": token})
    assert status == 200 and 'data-testid="gc-result"' in page
    # The sign-in form too: a session cannot be planted from another site.
    status, _ = await console.post("/signin", {"username": "ann", "password": USERS["ann"]})
    assert status == 403


async def test_plain_user_sees_what_they_may_pull_and_no_admin_page(
    console: Console, console_registry: RegistryProcess
) -> None:
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, console_registry.url, basic("pusher"))
        await oci.push_image("team/visible", described_image(31), "v1")
        await oci.push_image("secret/hidden", described_image(32), "v1")

    # A wrong password is refused by the registry itself.
    token = await console.csrf()
    status, page = await console.post(
        "/signin", {"csrf_token": token, "username": "ann", "password": "wrong"}
    )
    assert status == 401 and "invalid username or password" in page

    await console.sign_in(username="ann", password=USERS["ann"])
    _, page = await console.get("/repositories")
    assert "team/visible" in page and "secret/hidden" not in page
    status, _ = await console.get("/repository?name=secret/hidden")
    assert status == 404
    status, _ = await console.get("/manifest?repository=secret/hidden&reference=v1")
    assert status == 404
    status, page = await console.get("/manifest?repository=team/visible&reference=v1")
    assert status == 200 and "SEED=31" in page  # the config, read as ann over the OCI API
    for path in ("/gc", "/webhooks", "/events", "/health", "/webhooks/new"):
        status, page = await console.get(path)
        assert status == 403 and "Admin only" in page, path
    token = await console.csrf("/repositories")
    status, _ = await console.post(
        "/repository/delete-tag", {"csrf_token": token, "repository": "team/visible", "tag": "v1"}
    )
    assert status == 403

    # Anonymous: nothing here may be pulled without signing in.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(console.url + "/repositories") as response:
            page = await response.text()
    assert "team/visible" not in page and "secret/hidden" not in page

    # The operator sees everything.
    await console.sign_in(admin_token=ADMIN_TOKEN)
    _, page = await console.get("/repositories")
    assert "team/visible" in page and "secret/hidden" in page
