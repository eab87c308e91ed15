"""Walks of the storage layout in paths.py: what is stored where, by listing, reading nothing.

Names that are not what the layout puts there (a stray file, a name that is no digest) are
skipped: they hold nothing a walk's caller could act on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from registry.errors import OCIError
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import StorageDriver


def _digest(algorithm: str, hex_part: str) -> Digest | None:
    try:
        return Digest.parse(f"{algorithm}:{hex_part}")
    except OCIError:
        return None


def entry_digest(entry: str) -> Digest | None:
    """The digest an `<alg>-<hex>` entry name stands for (referrers, trash)."""
    algorithm, _, hex_part = entry.rpartition("-")
    return _digest(algorithm, hex_part) if algorithm else None


async def _digests_under(driver: StorageDriver, root: str) -> list[Digest]:
    """Digests stored as `<root>/<alg>/<hex>` directories."""
    found: list[Digest] = []
    for algorithm in sorted(await driver.list(root)):
        for hex_part in sorted(await driver.list(f"{root}/{algorithm}")):
            digest = _digest(algorithm, hex_part)
            if digest is not None:
                found.append(digest)
    return found


async def repositories(
    driver: StorageDriver, markers: Collection[str] = paths.REPOSITORY_MARKERS
) -> list[str]:
    """Names of the repository directories holding any of `markers`, sorted."""
    found: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        base = f"{paths.REPOSITORIES}/{prefix}" if prefix else paths.REPOSITORIES
        children = await driver.list(base)
        if prefix and any(c in markers for c in children):
            found.append(prefix)
        pending.extend(f"{prefix}/{c}" if prefix else c for c in children if c[:1] != "_")
    return sorted(found)


async def blobs(driver: StorageDriver) -> AsyncIterator[Digest]:
    """Every blob in the store (blobs/<alg>/<hex[:2]>/<hex>/data), in order."""
    for algorithm in sorted(await driver.list(paths.blobs_root())):
        base = f"{paths.blobs_root()}/{algorithm}"
        for prefix in sorted(await driver.list(base)):
            for hex_part in sorted(await driver.list(f"{base}/{prefix}")):
                digest = _digest(algorithm, hex_part)
                if digest is not None:
                    yield digest


async def revisions(driver: StorageDriver, name: str) -> list[Digest]:
    """The manifests stored in a repository (its revision links)."""
    return await _digests_under(driver, paths.revisions_root(name))


async def layers(driver: StorageDriver, name: str) -> list[Digest]:
    """The blobs linked into a repository (uploaded or mounted there)."""
    return await _digests_under(driver, paths.layers_root(name))


async def tags(driver: StorageDriver, name: str) -> list[str]:
    """A repository's tag names, sorted; a tag's link may be gone by the time it is read."""
    return sorted(await driver.list(paths.tags_root(name)))


async def referrers(driver: StorageDriver, name: str, subject: Digest) -> list[Digest]:
    """Manifests of a repository that name `subject` as theirs, from their entries' names."""
    found = [entry_digest(e) for e in sorted(await driver.list(paths.referrers_dir(name, subject)))]
    return [d for d in found if d is not None]


async def uploads(driver: StorageDriver, name: str) -> list[str]:
    """Ids of a repository's upload sessions, sorted."""
    return sorted(await driver.list(paths.uploads_root(name)))


async def trash_runs(driver: StorageDriver) -> list[str]:
    """Ids of the collections that have blobs set aside."""
    return sorted(await driver.list(paths.GC_TRASH))


async def trash(driver: StorageDriver, run_id: str) -> list[Digest]:
    """Blobs a collection has set aside."""
    found = [entry_digest(e) for e in sorted(await driver.list(paths.gc_trash_run(run_id)))]
    return [d for d in found if d is not None]
