"""`nimbus ctl` against a live registry, run as a user runs it: a separate process."""

from __future__ import annotations

import asyncio
import json
import os

from tests.fixtures.images import OCI_MANIFEST, make_image
from tests.fixtures.registry import RegistryProcess, free_port
from tests.registry.oci_client import OCIClient
from tests.registry_admin.conftest import TOKEN, run_ctl


def _ctl(reg: RegistryProcess, *args: str, token: str = TOKEN):
    return run_ctl("--registry", reg.grpc_address, "--token", token, *args)


async def test_tables_and_json(admin_registry: RegistryProcess, client: OCIClient, repo: str):
    image = make_image((1024, 4096), seed=51)
    await client.push_image(repo, image, "v1")
    assert (await client.put_manifest(repo, "stable", image.manifest)).status == 201

    repos, repos_json, tags, tags_json, manifest, manifest_json = await asyncio.gather(
        _ctl(admin_registry, "repos", "list"),
        _ctl(admin_registry, "--json", "repos", "list"),
        _ctl(admin_registry, "tags", "list", repo),
        _ctl(admin_registry, "tags", "list", repo, "--json"),  # --json after the command too
        _ctl(admin_registry, "manifests", "get", repo, "v1"),
        _ctl(admin_registry, "--json", "manifests", "get", repo, image.digest),
    )
    for result in (repos, repos_json, tags, tags_json, manifest, manifest_json):
        assert result.returncode == 0, result.stderr

    lines = repos.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAGS", "MANIFESTS"]
    assert [repo, "2", "1"] in [line.split() for line in lines[1:]]
    listed = {r["name"]: r for r in json.loads(repos_json.stdout)}
    assert {k: listed[repo][k] for k in ("tag_count", "manifest_count")} == {
        "tag_count": 2,
        "manifest_count": 1,
    }
    assert listed[repo]["size"] > 0 and listed[repo]["last_pushed"]

    lines = tags.stdout.splitlines()
    assert lines[0].split()[:3] == ["TAG", "DIGEST", "SIZE"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["stable", "v1"]
    assert all(row[1] == image.digest for row in rows)
    listed = json.loads(tags_json.stdout)
    assert [(t["name"], t["digest"], t["size"], t["media_type"]) for t in listed] == [
        ("stable", image.digest, image.manifest.size, OCI_MANIFEST),
        ("v1", image.digest, image.manifest.size, OCI_MANIFEST),
    ]

    shown = dict(line.split(":", 1) for line in manifest.stdout.splitlines())
    assert shown["Digest"].strip() == image.digest
    assert shown["Platforms"].strip() == "linux/amd64"
    assert shown["Tags"].strip() == "stable,v1"
    assert shown["Layers"].strip() == "2"
    details = json.loads(manifest_json.stdout)
    assert details["digest"] == image.digest
    assert details["size"] == image.manifest.size
    assert details["platforms"] == [
        {"os": "linux", "architecture": "amd64", "variant": "", "os_version": ""}
    ]


async def test_deletes(admin_registry: RegistryProcess, client: OCIClient, repo: str):
    image = make_image((700,), seed=52)
    await client.push_image(repo, image, "v1")
    assert (await client.put_manifest(repo, "v2", image.manifest)).status == 201

    untag = await _ctl(admin_registry, "tags", "rm", repo, "v2")
    assert untag.returncode == 0, untag.stderr
    assert untag.stdout.strip() == f"deleted tag {repo}:v2 (was {image.digest})"
    assert (await client.manifest(repo, "v2")).status == 404

    delete = await _ctl(admin_registry, "--json", "manifests", "rm", repo, image.digest)
    assert delete.returncode == 0, delete.stderr
    assert json.loads(delete.stdout) == {
        "repository": repo,
        "digest": image.digest,
        "removed_tags": ["v1"],
    }
    assert (await client.manifest(repo, image.digest)).status == 404

    again = await _ctl(admin_registry, "manifests", "rm", repo, image.digest)
    assert again.returncode == 1
    assert "not found" in again.stderr


async def test_gc_shows_progress(admin_registry: RegistryProcess):
    text, as_json = await asyncio.gather(
        _ctl(admin_registry, "gc", "--dry-run"),
        _ctl(admin_registry, "--json", "gc", "--dry-run", "--grace", "3600"),
    )
    # Two collections at once: the registry runs one and refuses the other.
    results = [text, as_json]
    assert any(r.returncode == 0 for r in results), [r.stderr for r in results]
    for result in results:
        if result.returncode != 0:
            assert "already running" in result.stderr
    if text.returncode != 0:
        text = await _ctl(admin_registry, "gc", "--dry-run")
    if as_json.returncode != 0:
        as_json = await _ctl(admin_registry, "--json", "gc", "--dry-run", "--grace", "3600")

    lines = text.stdout.splitlines()
    assert lines[0].startswith("[mark] ")
    assert any(line.startswith("[sweep_blobs] ") for line in lines)
    assert lines[-1].startswith("[done] would free ")
    messages = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert messages[0]["phase"] == "MARK"
    assert messages[-1]["phase"] == "DONE"
    assert all(m["dry_run"] for m in messages)
    assert messages[-1]["stats"]["repositories"] >= 0

    stats = await _ctl(admin_registry, "stats")
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[0].split(":")[0] == "Repositories"


async def test_clear_errors(admin_registry: RegistryProcess):
    closed = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "NIMBUS_ADMIN_TOKEN": TOKEN}
    unreachable, no_token, wrong_token, missing, from_env = await asyncio.gather(
        run_ctl("--registry", closed, "repos", "list"),
        run_ctl("--registry", admin_registry.grpc_address, "repos", "list"),
        _ctl(admin_registry, "repos", "list", token="not-the-token"),
        _ctl(admin_registry, "tags", "list", "no/such/repo"),
        run_ctl("--registry", admin_registry.grpc_address, "--json", "stats", env=env),
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"nimbus ctl: cannot reach registry at {closed}")
    assert "Traceback" not in unreachable.stderr
    for refused in (no_token, wrong_token):
        assert refused.returncode == 1
        assert "admin token missing or wrong" in refused.stderr
        assert admin_registry.grpc_address in refused.stderr
    assert missing.returncode == 1
    assert "not found" in missing.stderr and "no/such/repo" in missing.stderr
    assert from_env.returncode == 0, from_env.stderr
    assert "blob_bytes" in json.loads(from_env.stdout)
