"""Listing: tags of a repository and the catalog of repositories, in lexical pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from registry.errors import ErrorCode, OCIError
from registry.storage import paths, walk
from registry.storage.driver import StorageDriver

MAX_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    # The last item of this page when more follow: the `last` of the next request.
    next_last: str | None


def paginate(items: list[str], n: int | None, last: str | None, default: int | None) -> Page:
    """Lexically sorted items after ``last``, at most ``n`` (or ``default``) of them."""
    ordered = sorted(items)
    if last:
        ordered = [i for i in ordered if i > last]
    limit = n if n is not None else default
    if limit is None or len(ordered) <= limit:
        return Page(ordered, None)
    page = ordered[:limit]
    return Page(page, page[-1] if page else None)


def parse_page_size(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, "n is not a number") from None
    if n < 0 or n > MAX_PAGE:
        raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be between 0 and {MAX_PAGE}")
    return n


class RepositoryService:
    def __init__(self, driver: StorageDriver, catalog_page: int = 1000) -> None:
        self.driver = driver
        self.catalog_page = catalog_page

    async def exists(self, name: str) -> bool:
        children = await self.driver.list(paths.repository(name))
        return any(child in paths.REPOSITORY_MARKERS for child in children)

    async def tags(self, name: str, n: int | None, last: str | None) -> Page:
        if not await self.exists(name):
            raise OCIError(ErrorCode.NAME_UNKNOWN, detail={"name": name})
        return paginate(await self.driver.list(paths.tags_root(name)), n, last, None)

    async def all_repositories(self) -> list[str]:
        """Every repository's name, sorted (the storage layout's walk)."""
        return await walk.repositories(self.driver)

    async def catalog(
        self, n: int | None, last: str | None, visible: Callable[[str], bool] | None = None
    ) -> Page:
        """A page of repositories; ``visible`` hides the ones a caller may not see."""
        names = await self.all_repositories()
        if visible is not None:
            names = [name for name in names if visible(name)]
        return paginate(names, n, last, self.catalog_page)
