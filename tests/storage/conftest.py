"""Storage drivers under test: every contract test runs on the filesystem and the S3 driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver
from registry.storage.s3 import MIN_PART_SIZE, S3Driver
from tests.fixtures.s3 import S3Server

DriverFactory = Callable[[], StorageDriver]


@pytest.fixture(params=["filesystem", "s3"])
async def open_driver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[DriverFactory]:
    """Opens drivers over one store: a second one stands for another process or replica."""
    opened: list[StorageDriver] = []
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        # The smallest part S3 allows, so that a few MiB already make a multipart upload.
        config = server.config(
            server.create_bucket(), prefix="nimbus/root", multipart_part_size=MIN_PART_SIZE
        )

        def make() -> StorageDriver:
            driver = S3Driver(config)
            opened.append(driver)
            return driver
    else:

        def make() -> StorageDriver:
            driver = FilesystemDriver(tmp_path / "data")
            opened.append(driver)
            return driver

    yield make
    for driver in opened:
        await driver.close()


@pytest.fixture
async def driver(open_driver: DriverFactory) -> StorageDriver:
    d = open_driver()
    await d.open()
    return d
