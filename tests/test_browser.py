"""The main customer journey in a real browser: Debian's Chromium driven by Playwright
against a live panel and the real stack (panel worker, node agent, LXC).

Sign in, create a busybox VE (started by its create job), stop and start it, see it
running, stop it, destroy it; the pages follow the jobs through htmx polling, so nothing
here reloads by hand. Screenshots of each
step go to docs/screenshots/ for the docs and for a person to look at.

Then the other roles and the other language: a viewer finds no buttons that change a VE,
an operator sets the root password, a staff admin sees the node and every tenant's VEs,
and the VE list and a VE page read in Japanese after the language switch.
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
    expect(page.get_by_label("Start the VE once it is created")).to_be_checked()
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
    # The create job started it (the form's default); stop it to use the Start button.
    expect(state).to_have_attribute("data-state", "running")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(state).to_have_attribute("data-state", "stopped", timeout=JOB_TIMEOUT_MS)
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


def sign_in(page, base_url, username, path="/ves/"):
    page.goto(base_url + path)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def member(username, tenant, role, staff=False):
    from tests.tenancy import make_user

    user = make_user(username, tenant=tenant, role=role, staff=staff)
    user.set_password(PASSWORD)
    user.save()
    return user


def test_a_viewer_finds_no_power_buttons_on_a_ve_page(stack, node, live_server, browser_page):
    from panel.models import VE, Membership, Tenant
    from panel.services import ves as svc
    from tests.conftest import run

    expect = playwright.expect
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    member("vera", tenant, Membership.Role.VIEWER)
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="seen1")).ve_id)
    page = browser_page
    sign_in(page, live_server.url, "vera")
    expect(page.get_by_role("cell", name="seen1")).to_be_visible()
    expect(page.get_by_role("link", name="Create a VE")).to_have_count(0)
    page.get_by_role("link", name=str(ve.veid), exact=True).click()
    expect(page.locator("#ve-status [data-state]")).to_have_attribute("data-state", "stopped")
    expect(page.get_by_text("Your role in this tenant is viewer")).to_be_visible()
    for name in ("Start", "Stop", "Restart", "Destroy this VE", "Set root password", "Change resources"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    shot(page, "08-viewer-ve")


def test_an_operator_sets_the_root_password_on_the_ve_page(stack, node, live_server, browser_page):
    from panel.models import VE, Job, Membership, Tenant
    from panel.services import ves as svc
    from panel.services.identity import sha512_crypt
    from tests.conftest import run

    expect = playwright.expect
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    member("oscar", tenant, Membership.Role.OPERATOR)
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="pw1")).ve_id)
    run(svc.ve_start(ve=ve))
    page = browser_page
    sign_in(page, live_server.url, "oscar", path=f"/ves/{ve.pk}/")
    page.get_by_label("New root password", exact=True).fill("s3cret root pw")
    page.get_by_label("Repeat the new root password", exact=True).fill("s3cret root pw!")
    page.get_by_role("button", name="Set root password").click()
    expect(page.get_by_text("The two passwords do not match.")).to_be_visible()
    assert not Job.objects.filter(kind="passwd").exists()
    page.get_by_label("New root password", exact=True).fill("s3cret root pw")
    page.get_by_label("Repeat the new root password", exact=True).fill("s3cret root pw")
    shot(page, "09-set-password")
    page.get_by_role("button", name="Set root password").click()
    expect(page.get_by_text(f"Root password change of VE {ve.veid} queued.")).to_be_visible()
    job = run(Job.objects.get(kind="passwd", ve=ve))
    assert "root_password_hash" not in job.args
    line = run(svc.ve_exec(ve=ve, argv=["grep", "^root:", "/etc/shadow"])).result["output"].strip()
    stored = line.split(":")[1]
    assert stored == sha512_crypt("s3cret root pw", stored.split("$")[2])


def test_staff_see_the_node_and_every_tenants_ves(stack, node, live_server, browser_page):
    from panel.models import Membership, Tenant
    from panel.services import ves as svc
    from tests.conftest import run

    expect = playwright.expect
    acme = Tenant.objects.create(slug="acme", name="Acme")
    globex = Tenant.objects.create(slug="globex", name="Globex")
    member("sam", None, None, staff=True)
    member("olivia", acme, Membership.Role.OWNER)
    run(svc.ve_create(tenant=acme, template="busybox", hostname="acme-web"))
    run(svc.ve_create(tenant=globex, template="busybox", hostname="globex-db"))
    page = browser_page
    sign_in(page, live_server.url, "sam", path="/staff/")
    expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
    expect(page.get_by_role("link", name=node.name, exact=True)).to_be_visible()
    shot(page, "10-staff-nodes")
    page.get_by_role("link", name=node.name, exact=True).click()
    expect(page.get_by_role("heading", name="All VEs")).to_be_visible()
    expect(page.get_by_role("cell", name="acme-web")).to_be_visible()
    expect(page.get_by_role("cell", name="globex-db")).to_be_visible()
    shot(page, "11-staff-ves")
    # A tenant owner sees only the own tenant's VE, and no staff pages.
    page.context.clear_cookies()
    sign_in(page, live_server.url, "olivia")
    expect(page.get_by_role("cell", name="acme-web")).to_be_visible()
    expect(page.get_by_role("cell", name="globex-db")).to_have_count(0)
    assert page.goto(live_server.url + "/staff/").status == 403


def test_the_ve_list_and_a_ve_page_in_japanese(stack, node, live_server, browser_page):
    from panel.models import VE, Membership, Tenant
    from panel.services import ves as svc
    from tests.conftest import run

    expect = playwright.expect
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    member("olivia", tenant, Membership.Role.OWNER)
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="nihon1")).ve_id)
    page = browser_page
    sign_in(page, live_server.url, "olivia")
    page.get_by_label("Language").select_option("ja")
    page.get_by_role("button", name="Change").click()
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    page.goto(live_server.url + "/ves/")
    expect(page.get_by_role("heading", name="仮想環境", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="nihon1")).to_be_visible()
    shot(page, "12-ves-ja")
    page.get_by_role("link", name=str(ve.veid), exact=True).click()
    expect(page.get_by_role("heading", name="リソース", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="起動", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="root パスワードを設定", exact=True)).to_be_visible()
    shot(page, "13-ve-ja")


BROWSER_POOL = "198.19.250.0/24"  # this test's own pool: its unreachable route is removed at the end


def test_staff_create_a_plan_and_an_ip_pool_for_the_node(stack, node, live_server, browser_page):
    """The staff catalogue journey: a plan through its form, then an IP pool whose first
    try has a bad network (the error shows next to the field), bound to the live node, whose
    agent then installs the pool's unreachable route."""
    import subprocess

    from panel.models import IPPool, Job, Plan

    expect = playwright.expect
    member("sam", None, None, staff=True)
    page = browser_page
    try:
        sign_in(page, live_server.url, "sam", path="/staff/plans/")
        expect(page.get_by_text("No plan yet.")).to_be_visible()
        page.get_by_role("button", name="New plan").click()  # a link styled as a button
        page.get_by_label("Name", exact=True).fill("starter")
        page.get_by_label("Description").fill("Small web server")
        page.get_by_label("Memory").fill("512M")
        page.get_by_label("Disk").fill("10G")
        page.get_by_label("Bandwidth each way").fill("100M")
        shot(page, "15-staff-plan-form")
        page.get_by_role("button", name="Create the plan").click()
        expect(page.get_by_text("Plan starter was created.")).to_be_visible()
        expect(page.locator("#plan-starter")).to_contain_text("Small web server")
        assert Plan.objects.get(name="starter").memory == 512 << 20

        page.get_by_label("Staff area").get_by_role("link", name="IP pools").click()
        page.get_by_role("button", name="New IP pool").click()
        page.get_by_label("Name", exact=True).fill("edge")
        page.get_by_label("Network (CIDR)").fill("198.19.250.1/24")  # host bits set: not a network
        page.get_by_label("Nodes serving the pool").select_option(node.name)
        page.get_by_role("button", name="Create the pool").click()
        expect(page.locator("#id_network_error")).to_contain_text("is not a network in CIDR form")
        assert not IPPool.objects.exists()
        shot(page, "16-staff-pool-error")
        page.get_by_label("Network (CIDR)").fill(BROWSER_POOL)
        page.get_by_label("First address handed out").fill("198.19.250.10")
        page.get_by_role("button", name="Create the pool").click()
        expect(page.get_by_text("IP pool edge was created.")).to_be_visible()
        expect(page.locator("#pool-edge")).to_contain_text(node.name)
        shot(page, "17-staff-pools")
        from tests.conftest import run

        config = Job.objects.filter(kind="node_config", node=node).latest("created_at")
        assert config.args["pools"] == [BROWSER_POOL] and config.actor.username == "sam"
        run(config)
        routes = subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True,
                                timeout=30, check=True).stdout
        assert BROWSER_POOL in routes, routes

        page.get_by_label("Staff area").get_by_role("link", name="OS templates").click()
        expect(page.locator("#template-busybox")).to_contain_text(node.name)
        page.get_by_role("button", name="Stop offering busybox").click()
        expect(page.get_by_text("OS template busybox is no longer offered for new VEs.")).to_be_visible()
        expect(page.get_by_role("button", name="Offer busybox")).to_be_visible()
        shot(page, "18-staff-templates")
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", BROWSER_POOL], capture_output=True, timeout=30)
