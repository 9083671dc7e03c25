"""The VE console in a real browser: Debian's Chromium (Playwright) on the ASGI server
(uvicorn on panel.asgi, as `make run` starts it), the real node agent and a debian-12 VE.

An operator opens the console from the VE page, types `ps -ef` and sees init, `ip addr`
and sees venet0 with the VE's address, runs `top` full screen and leaves it, interrupts a
command with Ctrl-C, and the terminal follows the window's size. Screenshot:
docs/screenshots/14-console.png.
"""
import json

import pytest
from playwright import sync_api as playwright  # a hard dependency: never skipped

from panel.models import VE, AuditEvent, ConsoleSession, Membership, OSTemplate, Tenant
from panel.services import ves as svc
from tests import harness
from tests.conftest import run
from tests.console_fixtures import asgi, console_pools  # noqa: F401
from tests.test_browser import PASSWORD, browser_page, member, shot  # noqa: F401

pytestmark = pytest.mark.integration

SCREEN_JS = """() => {
  const b = window.hakoTerminal.buffer.active, out = [];
  for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); }
  return out.join("\\n");
}"""


def screen(page) -> str:
    return page.evaluate(SCREEN_JS)


def wait_screen(page, needle: str, timeout_ms: int = 20_000) -> None:
    try:
        page.wait_for_function(f"() => ({SCREEN_JS})().includes({json.dumps(needle)})", timeout=timeout_ms)
    except playwright.TimeoutError:
        raise AssertionError(f"{needle!r} is not on the terminal; it shows:\n{screen(page)[-3000:]}") from None


def test_an_operator_uses_the_console_in_the_browser(stack, node, debian12, console_pools, asgi, browser_page):
    expect = playwright.expect
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    oscar = member("oscar", tenant, Membership.Role.OPERATOR)
    OSTemplate.objects.get_or_create(name=debian12)
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=debian12, hostname="shell1", node=node),
                               timeout=300).ve_id)
    run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    page = browser_page
    page.goto(asgi.url + f"/ves/{ve.pk}/")
    page.get_by_label("User name").fill("oscar")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Open console").click()
    expect(page.locator("#console-state")).to_have_attribute("data-state", "open")
    page.locator("#terminal").click()
    kb = page.keyboard
    wait_screen(page, "root@shell1")
    kb.type("ps -ef\n")
    wait_screen(page, "/sbin/init")
    kb.type("ip addr\n")
    wait_screen(page, f"inet {ve.addresses[0]}/32")
    assert "venet0" in screen(page)
    shot(page, "14-console")
    # Colours and a full-screen program: top draws its screen, q leaves it.
    kb.type("top\n")
    wait_screen(page, "load average")
    kb.press("q")
    kb.type("echo back-$((20+22))\n")
    wait_screen(page, "back-42")
    # Ctrl-C interrupts the VE's foreground command, not the console.
    kb.type("sleep 300\n")
    page.wait_for_timeout(500)
    kb.press("Control+c")
    kb.type("echo alive-$((1+1))\n")
    wait_screen(page, "alive-2")
    # The terminal follows the window: a wider window, more columns in the VE.
    cols = page.evaluate("() => window.hakoTerminal.cols")
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.wait_for_function(f"() => window.hakoTerminal.cols > {cols}")
    wide = page.evaluate("() => window.hakoTerminal.cols")
    kb.type("stty size\n")
    wait_screen(page, f" {wide}\n")
    kb.type("exit\n")
    expect(page.locator("#console-state")).to_have_attribute("data-state", "exited")
    s = harness.wait_for(lambda: ConsoleSession.objects.filter(ve=ve, ended_at__isnull=False).first(), 15,
                         what="the session's end")
    assert (s.user, s.exit_code, s.kind) == (oscar, 0, "shell")
    assert AuditEvent.objects.filter(action="console.close", actor=oscar, detail__session=str(s.pk)).exists()
