"""Tag lists and the catalog: lexical order, `n`, `last` and pagination through `Link`."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.fixtures.images import make_blob, make_image
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient, Reply

# ASCIIbetical order (Go's sort.Strings): digits, upper case, '_', lower case.
TAGS = ["latest", "v1.10", "v1.2", "V2", "1.0", "_private", "a", "A", "v1.2-rc1", "z" * 128]
LINK_RE = re.compile(r'^<([^>]+)>;\s*rel="next"$')


def next_link(reply: Reply) -> str | None:
    link = reply.headers.get("Link")
    if link is None:
        return None
    match = LINK_RE.match(link)
    assert match, link
    return match.group(1)


async def follow(client: OCIClient, path: str, key: str, n: int) -> list[list[str]]:
    """Every page from ``path`` on, through the Link headers."""
    pages: list[list[str]] = []
    next_path: str | None = path
    while next_path is not None:
        reply = await client.request("GET", next_path)
        assert reply.status == 200, reply.body
        pages.append(reply.json()[key])
        next_path = next_link(reply)
        if next_path is not None:
            query = parse_qs(urlsplit(next_path).query)
            assert query["n"] == [str(n)]
            assert query["last"] == [pages[-1][-1]]
        assert len(pages) <= 100, "pagination does not end"
    return pages


async def _tagged(client: OCIClient, repo: str, tags: list[str]) -> None:
    image = make_image((10,), seed=80)
    await client.push_image(repo, image)
    for tag in tags:
        assert (await client.put_manifest(repo, tag, image.manifest)).status == 201


async def test_tags_are_listed_in_lexical_order(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, TAGS)
    reply = await client.request("GET", f"/v2/{repo}/tags/list")
    assert reply.status == 200
    assert reply.json() == {"name": repo, "tags": sorted(TAGS)}
    assert "Link" not in reply.headers


async def test_tag_pages_through_link_headers(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, TAGS)
    for n in (1, 3, 4, 10):
        pages = await follow(client, f"/v2/{repo}/tags/list?n={n}", "tags", n)
        assert [t for page in pages for t in page] == sorted(TAGS), n
        assert all(len(page) == n for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= n
    # n larger than the list: one page, no Link.
    pages = await follow(client, f"/v2/{repo}/tags/list?n=100", "tags", 100)
    assert pages == [sorted(TAGS)]


async def test_tags_after_last(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, TAGS)
    ordered = sorted(TAGS)
    reply = await client.request("GET", f"/v2/{repo}/tags/list?last={ordered[3]}")
    assert reply.json()["tags"] == ordered[4:]
    reply = await client.request("GET", f"/v2/{repo}/tags/list?n=2&last={ordered[3]}")
    assert reply.json()["tags"] == ordered[4:6]
    # `last` need not be a tag: what sorts after it.
    reply = await client.request("GET", f"/v2/{repo}/tags/list?last=b")
    assert reply.json()["tags"] == [t for t in ordered if t > "b"]
    reply = await client.request("GET", f"/v2/{repo}/tags/list?last={'z' * 128}")
    assert reply.json()["tags"] == []
    assert "Link" not in reply.headers


async def test_n_zero_is_an_empty_page_without_link(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, TAGS)
    reply = await client.request("GET", f"/v2/{repo}/tags/list?n=0")
    assert reply.status == 200
    assert reply.json()["tags"] == []
    assert "Link" not in reply.headers


async def test_invalid_page_sizes(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, ["a"])
    for n in ("-1", "abc", "1.5"):
        for path in (f"/v2/{repo}/tags/list?n={n}", f"/v2/_catalog?n={n}"):
            reply = await client.request("GET", path)
            assert reply.status == 400, (path, reply.body)
            assert reply.error_codes


async def test_tags_of_an_unknown_repository(client: OCIClient) -> None:
    (await client.request("GET", "/v2/never/pushed/tags/list")).expect_error(404, "NAME_UNKNOWN")


async def test_repository_without_tags_lists_none(client: OCIClient, repo: str) -> None:
    await _tagged(client, repo, ["only"])
    assert (await client.request("DELETE", f"/v2/{repo}/manifests/only")).status == 202
    reply = await client.request("GET", f"/v2/{repo}/tags/list")
    assert reply.status == 200
    assert reply.json()["tags"] in ([], None)


async def test_catalog_pages_through_link_headers(
    registry: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    client = OCIClient(http, registry.url)
    names = [
        "alpha",
        "alpha/beta",
        "alpha-beta",
        "alpha.beta/x",
        "b",
        "zeta/x/y",
        "zeta/x",
        "0numeric",
        "m_n",
        "blob-only",
    ]
    image = make_image((10,), seed=81)
    for name in names:
        if name == "blob-only":
            await client.push_blob(name, make_blob(10, seed=82).data)
        else:
            await client.push_image(name, image, "v1")
    # An upload session alone is no repository.
    await client.start_upload("uploading/only")

    reply = await client.request("GET", "/v2/_catalog")
    assert reply.status == 200
    assert reply.json() == {"repositories": sorted(names)}
    for n in (1, 2, 3, 7):
        pages = await follow(client, f"/v2/_catalog?n={n}", "repositories", n)
        assert [r for page in pages for r in page] == sorted(names), n
        assert all(len(page) == n for page in pages[:-1])
    reply = await client.request("GET", "/v2/_catalog?n=3&last=alpha/beta")
    assert reply.json()["repositories"] == [r for r in sorted(names) if r > "alpha/beta"][:3]
    reply = await client.request("GET", "/v2/_catalog?n=0")
    assert reply.json()["repositories"] == []
    assert "Link" not in reply.headers
