"""Browsing: the repositories list (search, sort), a repository's tags with pull commands, a
manifest's layers, config, platforms and referrers; against a real registry."""

from __future__ import annotations

import html
import re

import aiohttp

from tests.console.conftest import Console, basic
from tests.console.images import described_image
from tests.fixtures.images import make_artifact, make_multiplatform
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def rows(page: str, testid: str) -> list[str]:
    table = re.search(rf'data-testid="{testid}".*?</table>', page, re.S)
    assert table, f"no {testid} table"
    return [
        html.unescape(re.sub(r"<[^>]+>", " ", r))
        for r in re.findall(r"<tr>.*?</tr>", table.group(0), re.S)
    ]


async def test_repositories_repository_and_manifest_pages(
    console: Console, console_registry: RegistryProcess
) -> None:
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, console_registry.url, basic("pusher"))
        image = described_image(7)
        await oci.push_image("team/browse-app", image, "v1")
        await oci.push_image("team/browse-app", image, "stable")  # the same manifest
        index = make_multiplatform((2000, 3000), seed=8)
        await oci.push_index("team/browse-app", index, "multi")
        await oci.push_image("team/browse-app", make_artifact(image.manifest, SBOM, b"sbom"))
        sig = make_artifact(
            image.manifest, SIGNATURE, b"sig", {"dev.cosignproject.cosign/signature": "MEUC"}
        )
        await oci.push_image("team/browse-app", sig)
        await oci.push_image("zzz/browse-other", described_image(9), "latest")

    await console.sign_in(admin_token="console-admin-token-0123456789")
    status, page = await console.get("/repositories")
    assert status == 200
    names = [r.split()[0] for r in rows(page, "repositories")[1:]]
    assert "team/browse-app" in names and "zzz/browse-other" in names
    assert names == sorted(names)

    _, page = await console.get("/repositories?q=BROWSE-O")
    assert [r.split()[0] for r in rows(page, "repositories")[1:]] == ["zzz/browse-other"]
    _, page = await console.get("/repositories?q=browse&sort=-name")
    assert [r.split()[0] for r in rows(page, "repositories")[1:]] == [
        "zzz/browse-other", "team/browse-app",
    ]  # fmt: skip
    # Sizes human-readable, the exact bytes in the title.
    assert re.search(r'title="[\d,]+ bytes" data-bytes="\d+">[\d.]+ KiB<', page)

    _, page = await console.get("/repository?name=team/browse-app")
    tag_rows = rows(page, "tags")
    assert any(r.split()[0] == "v1" and image.digest[:19] in r for r in tag_rows)
    assert any(r.split()[0] == "multi" for r in tag_rows)
    # Platforms per tag: one GetManifest per distinct manifest of the page, not per tag.
    by_tag = {r.split()[0]: r for r in tag_rows[1:]}
    platforms = {t: re.findall(r"linux/\w+", by_tag[t]) for t in ("v1", "stable", "multi")}
    assert platforms == {
        "v1": ["linux/arm64"],
        "stable": ["linux/arm64"],
        "multi": ["linux/amd64", "linux/arm64"],
    }
    console.grpc.calls.clear()
    await console.get("/repository?name=team/browse-app")
    assert dict(console.grpc.calls) == {"registry.ListTags": 1, "registry.GetManifest": 2}
    # Last pulled: never, until a client pulls through the tag.
    assert "never" in by_tag["stable"] and "never" in by_tag["v1"]
    async with aiohttp.ClientSession() as http:
        oci = OCIClient(http, console_registry.url, basic("pusher"))
        assert (await oci.manifest("team/browse-app", "stable")).status == 200
    _, page = await console.get("/repository?name=team/browse-app")
    by_tag = {r.split()[0]: r for r in rows(page, "tags")[1:]}
    assert "never" not in by_tag["stable"] and "never" in by_tag["v1"]
    assert len(re.findall(r'data-testid="last-pulled"><time datetime=', page)) == 1
    host = console_registry.host
    assert f"docker pull {host}/team/browse-app:v1" in page
    assert (
        f"skopeo copy --all docker://{host}/team/browse-app@{image.digest} oci:browse-app:v1"
        in page
    )

    _, page = await console.get("/manifest?repository=team/browse-app&reference=v1")
    assert image.digest in page
    assert "application/vnd.oci.image.manifest.v1+json" in page
    layer_rows = rows(page, "layers")[1:]
    assert len(layer_rows) == 2
    total = sum(x.size for x in image.layers)
    first_share = round(100 * image.layers[0].size / total, 1)
    assert f"{first_share}%" in layer_rows[0]
    assert "linux/arm64" in page
    assert '<code data-testid="entrypoint">/usr/bin/app --serve</code>' in page
    assert "SEED=7" in page and "RUN step 1" in page
    assert "https://example.test/app" in rows(page, "labels")[0]
    assert SBOM in page and SIGNATURE in page and "MEUC" in page

    _, page = await console.get("/manifest?repository=team/browse-app&reference=multi")
    platform_rows = rows(page, "platforms")[1:]
    assert [r.split()[0] for r in platform_rows] == ["linux/amd64", "linux/arm64"]
    for child in index.images:
        assert f"reference={child.digest.replace(':', '%3A')}" in page

    status, _ = await console.get("/manifest?repository=team/browse-app&reference=nope")
    assert status == 404
