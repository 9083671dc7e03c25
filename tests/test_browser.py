"""The main customer journey in a real browser: Debian's Chromium driven by Playwright
against a live panel and the real stack (panel worker, node agent, LXC).

Sign in, create a busybox VE, start it, see it running, stop it, destroy it; the pages
follow the jobs through htmx polling, so nothing here reloads by hand. Screenshots of each
step go to docs/screenshots/ for the docs and for a person to look at.
"""
import os
from pathlib import Path

import pytest
from playwright import sync_api as playwright  # a hard dependency: the journey must not be skipped

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("HAKO_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "correct horse battery"
JOB_TIMEOUT_MS = 90_000


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test makes
    # meanwhile are plain synchronous ones (Playwright's documented Django setting).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup-host.sh installs Debian's chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_customer_creates_starts_stops_and_destroys_a_ve(stack, node, live_server, browser_page):
    from panel.models import VE, Membership, Tenant
    from tests.tenancy import make_user

    expect = playwright.expect
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    user = make_user("olivia", tenant=tenant, role=Membership.Role.OWNER)
    user.set_password(PASSWORD)
    user.save()
    page = browser_page

    page.goto(live_server.url + "/ves/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill("olivia")
    page.get_by_label("Password").fill(PASSWORD)
    shot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("This tenant has no VEs yet.")).to_be_visible()

    page.get_by_role("link", name="Create the first one").click()
    page.get_by_label("OS template").select_option("busybox")
    page.get_by_label("Hostname").fill("web1")
    page.get_by_label("Memory").fill("128M")
    shot(page, "02-create")
    page.get_by_role("button", name="Create", exact=True).click()
    # The job page follows the create job by itself (htmx polling) until it is over.
    expect(page.locator("#job-log [data-state]")).to_have_attribute("data-state", "succeeded",
                                                                   timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-log")).not_to_have_attribute("hx-trigger", "every 1s")
    shot(page, "03-create-job")

    ve = VE.objects.get(hostname="web1")
    page.get_by_role("link", name=f"Go to VE {ve.veid}").click()
    state = page.locator("#ve-status [data-state]")
    expect(state).to_have_attribute("data-state", "stopped")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(state).to_have_attribute("data-state", "running", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#ve-live")).not_to_have_attribute("hx-trigger", "every 2s", timeout=JOB_TIMEOUT_MS)
    shot(page, "04-running")

    page.get_by_label("Main").get_by_role("link", name="VEs", exact=True).click()
    expect(page.get_by_role("cell", name="web1")).to_be_visible()
    expect(page.get_by_role("cell", name="running")).to_be_visible()
    shot(page, "05-list")

    page.get_by_role("link", name=str(ve.veid), exact=True).click()
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(state).to_have_attribute("data-state", "stopped", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#ve-live")).not_to_have_attribute("hx-trigger", "every 2s", timeout=JOB_TIMEOUT_MS)

    page.get_by_label("Type the hostname").fill("web1")
    page.get_by_role("button", name="Destroy this VE").click()
    expect(page.locator("#job-log [data-state]")).to_have_attribute("data-state", "succeeded",
                                                                   timeout=JOB_TIMEOUT_MS)
    shot(page, "06-destroyed")
    ve.refresh_from_db()
    assert ve.state == "destroyed"

    # The same panel in Japanese.
    page.get_by_label("Language").select_option("ja")
    page.get_by_role("button", name="Change").click()
    page.goto(live_server.url + "/jobs/")
    expect(page.get_by_role("heading", name="ジョブ")).to_be_visible()
    shot(page, "07-jobs-ja")
