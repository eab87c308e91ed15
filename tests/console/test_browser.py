"""A real browser (Debian's chromium through chromium-driver) drives `nimbus ui` against a
registry, NATS and notifier: sign in, find a pushed image, open its manifest and see its
layers, add a webhook and see a delivery after a push, run a GC dry run. Screenshots go to
the test's directory, and to $NIMBUS_SCREENSHOTS when set (the README's come from there)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.console.images import described_image
from tests.fixtures.images import make_artifact, make_multiplatform
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.process import ChildProcess
from tests.fixtures.registry import RegistryProcess, free_port, wait_http
from tests.notifier.receiver import Receiver
from tests.registry.oci_client import OCIClient

TOKEN = "browser-admin-token-0123456789"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (make test-deps)"
)


class ConsoleProcess(ChildProcess):
    def __init__(self, log_path: Path, args: list[str]) -> None:
        super().__init__(log_path)
        self.port = free_port()
        self.args = args

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ConsoleProcess:
        argv = [sys.executable, "-m", "nimbus.cli", "ui", "--listen", f"127.0.0.1:{self.port}"]
        proc = self.spawn([*argv, *self.args], {**os.environ, "NIMBUS_ADMIN_TOKEN": TOKEN})
        wait_http(f"{self.url}/healthz", proc=proc)
        return self


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _push(url: str, coroutine_factory) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            await coroutine_factory(OCIClient(http, url))

    asyncio.run(run())


def _wait_for(driver, find, within: float = 30, refresh: bool = False):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while True:
        try:
            found = find()
            if found:
                return found
        except Exception:
            pass
        assert time.monotonic() < deadline, "not seen in the browser in time"
        time.sleep(0.3)
        if refresh:
            driver.refresh()


def test_console_in_a_real_browser(
    browser, tmp_path: Path, nats_factory: NatsFactory, notifier_factory: NotifierFactory
) -> None:
    from selenium.webdriver.common.by import By

    nats = nats_factory()
    registry = RegistryProcess(
        tmp_path / "data", ["--nats", nats.url, "--admin-token", TOKEN, "--site", "a"]
    ).start()
    notifier = notifier_factory(nats.url, ["--admin-token", TOKEN])
    console = ConsoleProcess(
        tmp_path / "console.log",
        [
            "--registry-url", registry.url,
            "--registry-grpc", registry.grpc_address,
            "--notifier-grpc", notifier.address,
            "--replicator-grpc", "",
        ],
    ).start()  # fmt: skip
    shots = [tmp_path / "shots"]
    if os.environ.get("NIMBUS_SCREENSHOTS"):
        shots.append(Path(os.environ["NIMBUS_SCREENSHOTS"]))
    for directory in shots:
        directory.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        for directory in shots:
            browser.save_screenshot(str(directory / f"{name}.png"))

    receiver = Receiver()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(receiver.start())
    threading_loop = _LoopThread(loop)
    try:
        image = described_image(51)

        async def seed(oci: OCIClient) -> None:
            await oci.push_image("shop/frontend", image, "1.4.2")
            await oci.push_index(
                "shop/frontend", make_multiplatform((3000, 9000), seed=52), "latest"
            )
            await oci.push_image(
                "shop/frontend", make_artifact(image.manifest, "application/spdx+json", b"sbom")
            )
            for name in ("shop/cart", "shop/checkout", "tools/debug"):
                await oci.push_image(name, described_image(len(name)), "v1")

        _push(registry.url, seed)

        # Sign in as the operator.
        browser.get(console.url + "/signin")
        browser.find_element(By.NAME, "admin_token").send_keys(TOKEN)
        browser.find_element(By.NAME, "admin_token").submit()
        _wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, '[data-testid="who"]'))
        assert browser.find_element(By.CSS_SELECTOR, '[data-testid="who"]').text == "admin"

        # Find the image by searching.
        browser.get(console.url + "/repositories")
        box = browser.find_element(By.ID, "q")
        box.send_keys("front")
        box.submit()
        _wait_for(browser, lambda: "front" in browser.current_url)
        links = browser.find_elements(By.CSS_SELECTOR, '[data-testid="repositories"] tbody a')
        assert [a.text for a in links] == ["shop/frontend"]
        browser.get(console.url + "/repositories")
        shot("repositories")
        browser.find_element(By.LINK_TEXT, "shop/frontend").click()
        _wait_for(browser, lambda: browser.find_element(By.LINK_TEXT, "1.4.2"))
        shot("repository")

        # Its manifest: layers and the config.
        browser.find_element(By.LINK_TEXT, "1.4.2").click()
        rows = _wait_for(
            browser,
            lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="layers"] tbody tr'),
        )
        assert len(rows) == 2
        assert image.layers[0].digest[:19] in rows[0].text
        assert "/usr/bin/app --serve" in browser.page_source
        shot("manifest")
        browser.get(console.url + "/manifest?repository=shop/frontend&reference=latest")
        platforms = browser.find_elements(By.CSS_SELECTOR, '[data-testid="platforms"] tbody tr')
        assert [p.text.split()[0] for p in platforms] == ["linux/amd64", "linux/arm64"]
        platforms[1].find_element(By.TAG_NAME, "a").click()
        _wait_for(
            browser,
            lambda: "linux/arm64" in browser.page_source and "Layers" in browser.page_source,
        )

        # A webhook; its secret shown once; a delivery after a push.
        browser.get(console.url + "/webhooks/new")
        browser.find_element(By.NAME, "url").send_keys(receiver.url)
        browser.find_element(By.NAME, "description").send_keys("deploy pipeline")
        browser.find_element(By.CSS_SELECTOR, 'input[name="actions"][value="push"]').click()
        browser.find_element(By.NAME, "repositories").send_keys("shop/*")
        browser.find_element(By.CSS_SELECTOR, 'form.card button[type="submit"]').click()
        secret = _wait_for(
            browser, lambda: browser.find_element(By.CSS_SELECTOR, '[data-testid="secret"]')
        )
        assert secret.text.startswith("whsec_")
        browser.find_element(By.LINK_TEXT, "Go to the webhook").click()
        _push(registry.url, lambda oci: oci.push_image("shop/cart", described_image(77), "v2"))
        _wait_for(
            browser,
            lambda: (
                "succeeded"
                in browser.find_element(By.CSS_SELECTOR, '[data-testid="deliveries"]').text
            ),
            refresh=True,
        )
        assert "push shop/cart:v2" in browser.page_source
        shot("webhook")

        # A GC dry run.
        browser.get(console.url + "/gc")
        browser.find_element(By.CSS_SELECTOR, 'button[value="dry-run"]').click()
        result = _wait_for(
            browser, lambda: browser.find_element(By.CSS_SELECTOR, '[data-testid="gc-result"]')
        )
        assert "Would free" in result.text
        shot("gc")
    finally:
        threading_loop.stop(receiver)
        console.stop()
        registry.stop()


class _LoopThread:
    """The receiver's event loop, run in a thread while the browser test drives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import threading

        self.loop = loop
        self.thread = threading.Thread(target=loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self, receiver: Receiver) -> None:
        asyncio.run_coroutine_threadsafe(receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
