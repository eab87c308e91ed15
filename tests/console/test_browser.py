"""A real browser (Debian's chromium through chromium-driver) drives the web console of a live
`nimbus up --sites 2`: sign in, find a pushed image, open its manifest and see its layers and
platforms, add a webhook and see a delivery after a push, redeliver a dead delivery, watch the
events page's live feed and the peer's backlog drop to 0, sync the peer with a live progress
bar, run a GC dry run. Screenshots go to the test's directory, and to $NIMBUS_SCREENSHOTS when
set (the README's come from there)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.console.images import described_image
from tests.e2e.conftest import Ports, UpProcess
from tests.fixtures.images import make_artifact, make_multiplatform
from tests.notifier.receiver import Receiver
from tests.registry.oci_client import OCIClient

TOKEN = "browser-admin-token-0123456789"
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
# Deliveries give up fast, so one that fails is dead within the test.
FAST_DELIVERIES = {
    "NIMBUS_DELIVERY_TIMEOUT": "2",
    "NIMBUS_DELIVERY_MAX_ATTEMPTS": "2",
    "NIMBUS_DELIVERY_BACKOFF_INITIAL": "0.05",
    "NIMBUS_DELIVERY_BACKOFF_MAX": "0.2",
    # The failing receiver's circuit stays closed: its deliveries die by their attempts.
    "NIMBUS_DELIVERY_BREAKER_FAILURES": "1000",
}

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (make test-deps)"
)


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


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[UpProcess]:
    ports = Ports()
    up = UpProcess(
        tmp_path / "data", ports, ["--sites", "2", "--admin-token", TOKEN], FAST_DELIVERIES
    ).start()
    try:
        asyncio.run(up.wait_ready())
        yield up
    finally:
        up.cleanup()


def _add_webhook(address: str, url: str, repositories: list[str]) -> str:
    """A webhook made through the API (the browser adds its own through the form)."""

    async def run() -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            created = await webhooks_pb2_grpc.WebhooksStub(channel).CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(
                        url=url,
                        filter=webhooks_pb2.EventFilter(
                            actions=["push"], repositories=repositories
                        ),
                        enabled=True,
                        secrets=["whsec_" + "A" * 32],
                    )
                ),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
            )
            return str(created.id)

    return asyncio.run(run())


def test_console_in_a_real_browser(browser, stack: UpProcess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    console = f"http://{stack.ports.address('console_port')}"
    site_a = f"http://{stack.registry('a')}"
    shots = [tmp_path / "shots"]
    if os.environ.get("NIMBUS_SCREENSHOTS"):
        shots.append(Path(os.environ["NIMBUS_SCREENSHOTS"]))
    for directory in shots:
        directory.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        for directory in shots:
            browser.save_screenshot(str(directory / f"{name}.png"))

    def css(selector: str):  # type: ignore[no-untyped-def]
        return browser.find_element(By.CSS_SELECTOR, selector)

    receiver, flaky = Receiver(), Receiver()
    flaky.default_status = 503
    loop = _LoopThread(asyncio.new_event_loop())
    loop.run(receiver.start())
    loop.run(flaky.start())
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

        _push(site_a, seed)

        # Sign in as the operator.
        browser.get(console + "/signin")
        browser.find_element(By.NAME, "admin_token").send_keys(TOKEN)
        browser.find_element(By.NAME, "admin_token").submit()
        _wait_for(browser, lambda: css('[data-testid="who"]'))
        assert css('[data-testid="who"]').text == "admin"

        # The keyboard: the first Tab lands on the skip link, which moves to the content; Tab
        # then goes through the page's links and buttons, each with a visible focus ring.
        browser.get(console + "/repositories")
        css("body").send_keys(Keys.TAB)
        skip = browser.switch_to.active_element
        assert skip.text == "Skip to content" and skip.is_displayed()
        assert skip.value_of_css_property("outline-style") == "solid"
        skip.send_keys(Keys.ENTER)
        assert browser.current_url.endswith("#main")
        browser.get(console + "/repositories")
        reached = []
        for _ in range(12):
            browser.switch_to.active_element.send_keys(Keys.TAB)
            active = browser.switch_to.active_element
            reached.append((active.tag_name, active.text or active.get_attribute("name")))
        assert reached[:3] == [("a", "Skip to content"), ("a", "Nimbus"), ("a", "Repositories")]
        assert ("button", "Sign out") in reached and ("input", "q") in reached, reached

        # Find the image by searching.
        browser.get(console + "/repositories")
        box = browser.find_element(By.ID, "q")
        box.send_keys("front")
        box.submit()
        _wait_for(browser, lambda: "front" in browser.current_url)
        links = browser.find_elements(By.CSS_SELECTOR, '[data-testid="repositories"] tbody a')
        assert [a.text for a in links] == ["shop/frontend"]
        browser.get(console + "/repositories")
        shot("repositories")
        browser.find_element(By.LINK_TEXT, "shop/frontend").click()
        _wait_for(browser, lambda: browser.find_element(By.LINK_TEXT, "1.4.2"))
        shot("repository")

        # Its manifest: layers and the config; the index's platforms, each a link.
        browser.find_element(By.LINK_TEXT, "1.4.2").click()
        rows = _wait_for(
            browser,
            lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="layers"] tbody tr'),
        )
        assert len(rows) == 2
        assert image.layers[0].digest[:19] in rows[0].text
        assert "/usr/bin/app --serve" in browser.page_source
        shot("manifest")
        browser.get(console + "/manifest?repository=shop/frontend&reference=latest")
        platforms = browser.find_elements(By.CSS_SELECTOR, '[data-testid="platforms"] tbody tr')
        assert [p.text.split()[0] for p in platforms] == ["linux/amd64", "linux/arm64"]
        platforms[1].find_element(By.TAG_NAME, "a").click()
        _wait_for(
            browser,
            lambda: "linux/arm64" in browser.page_source and "Layers" in browser.page_source,
        )

        # A webhook; its secret shown once; a delivery after a push.
        browser.get(console + "/webhooks/new")
        browser.find_element(By.NAME, "url").send_keys(receiver.url)
        browser.find_element(By.NAME, "description").send_keys("deploy pipeline")
        css('input[name="actions"][value="push"]').click()
        browser.find_element(By.NAME, "repositories").send_keys("shop/*")
        css('form.card button[type="submit"]').click()
        secret = _wait_for(browser, lambda: css('[data-testid="secret"]'))
        assert secret.text.startswith("whsec_")
        browser.find_element(By.LINK_TEXT, "Go to the webhook").click()
        _push(site_a, lambda oci: oci.push_image("shop/cart", described_image(77), "v2"))
        _wait_for(
            browser,
            lambda: "succeeded" in css('[data-testid="deliveries"]').text,
            refresh=True,
        )
        assert "push shop/cart:v2" in browser.page_source
        shot("webhook")

        # The events page's live feed: a push appears without reloading the page.
        browser.get(console + "/events")
        _wait_for(browser, lambda: css('[data-testid="feed-state"]').text.startswith("Live"))
        _push(site_a, lambda oci: oci.push_image("ops/worker", described_image(78), "v7"))
        row = _wait_for(
            browser,
            lambda: [
                r for r in browser.find_elements(By.CSS_SELECTOR, "#feed tbody tr")
                if "ops/worker" in r.text and "v7" in r.text
            ],
        )  # fmt: skip
        assert "push" in row[0].text
        shot("events")

        # A dead delivery (its receiver answered 503 every time), redelivered once it is up.
        hook = _add_webhook(stack.ports.address("notifier_grpc_port"), flaky.url, ["ops/*"])
        _push(site_a, lambda oci: oci.push_image("ops/worker", described_image(79), "v8"))
        browser.get(f"{console}/webhooks/{hook}?status=dead")
        _wait_for(
            browser,
            lambda: "push ops/worker:v8" in css('[data-testid="deliveries"]').text,
            refresh=True,
        )
        dead = [
            r for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="deliveries"] tbody tr')
            if "push ops/worker:v8" in r.text
        ]  # fmt: skip
        dead[0].find_element(By.TAG_NAME, "a").click()
        _wait_for(browser, lambda: css('[data-testid="delivery-status"]').text == "dead")
        attempts = browser.find_elements(By.CSS_SELECTOR, '[data-testid="attempts"] tbody tr')
        assert len(attempts) == 2 and all("HTTP 503" in a.text for a in attempts)
        flaky.default_status = 200
        browser.find_element(By.XPATH, '//button[text()="Redeliver now"]').click()
        _wait_for(
            browser,
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="attempts"] tbody tr'))
                == 3
            ),
        )
        attempts = browser.find_elements(By.CSS_SELECTOR, '[data-testid="attempts"] tbody tr')
        assert "HTTP 200" in attempts[-1].text
        assert css('[data-testid="delivery-status"]').text == "succeeded"

        # Replication: the peer's backlog, live, at 0 once a push is copied to site b.
        browser.get(console + "/replication")
        _wait_for(browser, lambda: css("#status-state").text.startswith("Live"))
        peer = css("#peers tbody tr[data-peer]")
        copied_before = peer.find_element(By.CSS_SELECTOR, '[data-field="copied"]').text
        _push(site_a, lambda oci: oci.push_image("shop/cart", described_image(80), "v3"))
        _wait_for(
            browser,
            lambda: (
                peer.find_element(By.CSS_SELECTOR, '[data-field="copied"]').text != copied_before
            ),
        )
        _wait_for(
            browser,
            lambda: peer.find_element(By.CSS_SELECTOR, '[data-field="backlog"]').text == "0",
        )
        # A sync of one repository, its progress bar filled as the stream says.
        peer.find_element(By.NAME, "repository").send_keys("shop/frontend")
        peer.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        panel = _wait_for(browser, lambda: css('#sync-live[data-state="done"]'))
        bar = panel.find_element(By.TAG_NAME, "progress")
        assert bar.get_attribute("value") == bar.get_attribute("max") == "2"
        assert css('[data-testid="sync-live-text"]').text.startswith("Done: 0 images copied")
        assert browser.current_url == console + "/replication"  # no page was loaded for it
        shot("replication")

        # A GC dry run, its progress live from the GarbageCollect stream; then it may run.
        browser.get(console + "/gc")
        assert not css('button[value="run"]').is_displayed()
        css('button[value="dry-run"]').click()
        panel = _wait_for(browser, lambda: css('#gc-live[data-state="done"]'))
        assert css('[data-testid="gc-live-text"]').text.startswith("Dry run done: would free")
        assert panel.find_element(By.TAG_NAME, "progress").get_attribute("value") == "5"
        assert css('button[value="run"]').is_displayed()
        assert browser.current_url == console + "/gc"
        shot("gc")
    finally:
        loop.run(receiver.stop())
        loop.run(flaky.stop())
        loop.stop()


class _LoopThread:
    """The receivers' event loop, run in a thread while the browser test drives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine) -> object:  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
