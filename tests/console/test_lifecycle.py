"""The lifecycle page against a real registry: it lists the stored retention, immutable and
quota rules (with the quota's usage); a retention dry run shows exactly the tags and manifests
the run then deletes, deleting nothing itself, as a page and as a live stream; the run deletes
exactly those; a plain user is refused, and so is a POST without the CSRF token."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google.protobuf.duration_pb2 import Duration

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from tests.console.conftest import ADMIN_TOKEN, USERS, Console, basic
from tests.console.readable import assert_readable, text_of
from tests.fixtures.images import Image, make_image
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

DAY = 86400
# Under the "apps" rule: v* kept, stable kept by the immutable rule, the rest deleted. Under
# no rule: keep/app, whose dev tag must stay.
PUSHED = {
    "lc/app": ["v1", "v2", "stable", "dev-1", "dev-2", "dev-3"],
    "lc/other": ["v9", "dev-x"],
    "keep/app": ["dev-keep"],
}
DOOMED = {("lc/app", "dev-1"), ("lc/app", "dev-2"), ("lc/app", "dev-3"), ("lc/other", "dev-x")}


def _policies(*retention: pb.RetentionRule, **extra: Any) -> pb.SetLifecyclePoliciesRequest:
    return pb.SetLifecyclePoliciesRequest(
        policies=pb.LifecyclePolicies(retention=list(retention), **extra)
    )


APPS = pb.RetentionRule(
    name="apps",
    repositories="lc/*",
    keep_tags=["v*"],
    # Every manifest its deleted tags leave untagged goes at once.
    untagged_older_than=Duration(seconds=0),
)
# Shown, never applied: nothing is pushed under nightly/, and its schedule is once a year.
NIGHTLY = pb.RetentionRule(
    name="nightly",
    repositories="nightly/*",
    keep_last=2,
    pushed_within=Duration(seconds=7 * DAY),
    pulled_within=Duration(seconds=30 * DAY),
    schedule="0 4 1 1 *",
)


@pytest.fixture
async def stub(console_registry: RegistryProcess) -> AsyncIterator[Any]:
    async with open_channel(console_registry.grpc_address, ADMIN_TOKEN) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)


async def _push(registry: RegistryProcess, tags: dict[str, list[str]], seed: int) -> dict:
    """Each tag its own image: (repository, tag) -> image."""
    images: dict[tuple[str, str], Image] = {}
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, registry.url, basic("pusher"))
        for repository, names in tags.items():
            for name in names:
                image = make_image((700, 300), seed=seed + len(images))
                await oci.push_image(repository, image, name)
                images[repository, name] = image
    return images


async def _tags(stub: Any, repository: str) -> set[str]:
    reply = await stub.ListTags(pb.ListTagsRequest(repository=repository, page_size=100))
    return {t.name for t in reply.tags}


async def _oci_tags(registry: RegistryProcess, repository: str) -> set[str]:
    async with aiohttp.ClientSession() as http:
        reply = await OCIClient(http, registry.url, basic("pusher")).request(
            "GET", f"/v2/{repository}/tags/list"
        )
    assert reply.status == 200
    return set(reply.json()["tags"] or [])


async def _manifest_status(registry: RegistryProcess, repository: str, digest: str) -> int:
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, registry.url, basic("pusher"))
        return (await oci.manifest(repository, digest)).status


def _result_tags(page: str) -> set[tuple[str, str]]:
    rows = re.findall(
        r'<tr data-kind="tag"><td>tag</td>\s*<td>([^<]*):<span data-tag>([^<]*)</span>', page
    )
    return set(rows)


def _result_manifests(page: str) -> set[tuple[str, str]]:
    rows = re.findall(
        r'<tr data-kind="manifest"><td>manifest</td>\s*<td>([^<]*) <code title="([^"]+)"', page
    )
    return set(rows)


def _rule_row(page: str, name: str) -> str:
    found = re.search(rf'<tr data-rule="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for the rule {name}"
    return text_of(found.group(1))


async def _events(stream: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kind = ""
    async for raw in stream.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            assert kind == "retention", (kind, line)
            found.append(json.loads(line[6:]))
    return found


async def test_rules_dry_run_then_run(
    console: Console, console_registry: RegistryProcess, stub: Any
) -> None:
    await stub.SetLifecyclePolicies(
        _policies(
            APPS,
            NIGHTLY,
            immutable=[pb.ImmutableTagRule(name="stable-tags", pattern="lc/*:stable")],
            quotas=[pb.QuotaRule(name="lc-quota", repositories="lc/*", bytes=50 << 20, tags=20)],
        )
    )
    images = await _push(console_registry, PUSHED, seed=500)
    doomed_manifests = {(repo, images[repo, tag].digest) for repo, tag in DOOMED}
    await console.sign_in(admin_token=ADMIN_TOKEN)

    status, page = await console.get("/lifecycle")
    assert status == 200
    assert_readable(page, "Lifecycle", "Run retention", "Dry run: show what would be deleted")
    assert '<a href="/lifecycle" aria-current="page">Lifecycle</a>' in page
    apps = _rule_row(page, "apps")
    assert "lc/*" in apps and "matching v*" in apps and "deleted after 0s" in apps, apps
    assert "on demand" in apps
    nightly = _rule_row(page, "nightly")
    for phrase in ("the last 2 pushed", "pushed within 1w", "pulled within 30d", "0 4 1 1 *"):
        assert phrase in nightly, (phrase, nightly)
    assert "30d kept 0 4 1 1 *" in nightly, nightly  # its untagged manifests stay
    immutable = re.search(r'data-testid="immutable-rules">(.*?)</table>', page, re.S)
    assert immutable and "stable-tags lc/*:stable" in text_of(immutable.group(1))
    quotas = re.search(r'data-testid="quota-rules">(.*?)</table>', page, re.S)
    assert quotas
    assert "lc-quota lc/* limit 50.0 MiB limit 20" in text_of(quotas.group(1))
    usage = re.search(r'<tr data-quota="lc/app">(.*?)</tr>', page, re.S)
    assert usage and text_of(usage.group(1)).endswith(" of 50.0 MiB 6 of 20"), usage
    assert 'data-quota="keep/app"' not in page  # no quota applies there
    # No run yet: no result, and the run button waits for a dry run.
    assert 'data-testid="retention-result"' not in page
    assert re.search(r'<button[^>]*value="run"[^>]*data-after-dry-run hidden>', page)

    # The dry run as a page: exactly the tags and manifests the rules delete; nothing goes.
    token = await console.csrf("/lifecycle")
    status, page = await console.post("/lifecycle", {"csrf_token": token, "mode": "dry-run"})
    assert status == 200
    assert_readable(page, "Dry run: would delete 4 tags and 4 manifests", "Would delete")
    assert _result_tags(page) == DOOMED
    assert _result_manifests(page) == doomed_manifests
    freed = re.search(r'data-testid="retention-freed"><span title="([\d,]+) bytes"', page)
    assert freed and int(freed.group(1).replace(",", "")) > 0
    assert re.search(r'<button[^>]*value="run"[^>]*data-after-dry-run >', page), page
    for repository, tags in PUSHED.items():
        assert await _tags(stub, repository) == set(tags), repository

    # Only the rule ticked: nightly matches nothing pushed, so nothing would go.
    status, page = await console.post(
        "/lifecycle", {"csrf_token": token, "mode": "dry-run", "rule": "nightly"}
    )
    assert status == 200 and "Nothing to delete." in page and _result_tags(page) == set()
    assert re.search(r'name="rule" value="nightly" checked>', page)
    assert not re.search(r'name="rule" value="apps" checked>', page)

    # The same dry run, live: the RunRetention stream as server-sent events.
    async with console.http.post(
        console.url + "/lifecycle",
        data={"csrf_token": token, "mode": "dry-run"},
        headers={"Accept": "text/event-stream"},
    ) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        progress = await _events(stream)
    phases = [p["phase"] for p in progress]
    assert phases == sorted(phases) and phases[0] == 1 and phases[-1] == 4, phases
    assert progress[-1]["done"] and progress[-1]["dry_run"]
    assert progress[-1]["tags_deleted"] == 4 and progress[-1]["manifests_deleted"] == 4
    named = {p["item"]["name"] for p in progress if "item" in p}
    assert named == {f"{r}:{t}" for r, t in DOOMED} | {f"{r}@{d}" for r, d in doomed_manifests}
    for repository, tags in PUSHED.items():
        assert await _tags(stub, repository) == set(tags), repository

    # The run: exactly what the dry run showed goes, the rest stays.
    status, page = await console.post("/lifecycle", {"csrf_token": token, "mode": "run"})
    assert status == 200
    assert_readable(page, "Retention: deleted 4 tags and 4 manifests", "Deleted")
    assert _result_tags(page) == DOOMED and _result_manifests(page) == doomed_manifests
    assert re.search(r'<button[^>]*value="run"[^>]*data-after-dry-run hidden>', page)
    for repository, tags in PUSHED.items():
        left = set(tags) - {t for r, t in DOOMED if r == repository}
        assert await _tags(stub, repository) == left, repository
        assert await _oci_tags(console_registry, repository) == left, repository
    for repository, digest in doomed_manifests:
        assert await _manifest_status(console_registry, repository, digest) == 404
    assert await _manifest_status(console_registry, "lc/app", images["lc/app", "v1"].digest) == 200

    # Nothing is left to delete.
    status, page = await console.post("/lifecycle", {"csrf_token": token, "mode": "dry-run"})
    assert status == 200 and "Nothing to delete." in page


async def test_admin_only_and_csrf(
    console: Console, console_registry: RegistryProcess, stub: Any
) -> None:
    guard = pb.RetentionRule(name="guard", repositories="guard/*", keep_tags=["v*"])
    await stub.SetLifecyclePolicies(_policies(guard))
    await _push(console_registry, {"guard/app": ["v1", "dev-1"]}, seed=700)

    # A plain user: no link, the page and the run refused.
    await console.sign_in(username="ann", password=USERS["ann"])
    _, page = await console.get("/repositories")
    assert 'href="/lifecycle"' not in page
    status, page = await console.get("/lifecycle")
    assert status == 403 and "Admin only" in page
    token = await console.csrf("/repositories")
    status, page = await console.post("/lifecycle", {"csrf_token": token, "mode": "run"})
    assert status == 403 and "Admin only" in page
    assert await _tags(stub, "guard/app") == {"v1", "dev-1"}

    # The operator, without the token, with a wrong one, from another site: all refused.
    await console.sign_in(admin_token=ADMIN_TOKEN)
    _, page = await console.get("/repositories")
    assert 'href="/lifecycle"' in page
    token = await console.csrf("/lifecycle")
    form = {"mode": "run"}
    status, _ = await console.post("/lifecycle", form)
    assert status == 403
    status, _ = await console.post("/lifecycle", {**form, "csrf_token": token + "x"})
    assert status == 403
    status, _ = await console.post(
        "/lifecycle", {**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    async with console.http.post(
        console.url + "/lifecycle", data=form, headers={"Accept": "text/event-stream"}
    ) as stream:
        assert stream.status == 403
    assert await _tags(stub, "guard/app") == {"v1", "dev-1"}

    # With the token the same run goes through: the refusals were what kept dev-1.
    status, page = await console.post("/lifecycle", {**form, "csrf_token": token})
    assert status == 200 and _result_tags(page) == {("guard/app", "dev-1")}
    assert await _tags(stub, "guard/app") == {"v1"}
