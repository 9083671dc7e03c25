"""The VE console (issue 7) end to end: a live ASGI server (uvicorn on panel.asgi), the
real node agent's console relay and real LXC containers.

The WebSocket is driven with the `websockets` client here (tests/test_console_browser.py
drives it from Chromium); `vzctl enter` is driven through a pty, as a person's terminal.
"""
import json
import os
import select
import struct
import subprocess
import sys
import termios
import fcntl
import time

import pytest
from django.test import Client

from panel.models import VE, AuditEvent, ConsoleSession, Job, Membership, OSTemplate, Tenant
from panel.services import api_tokens
from panel.services import console as console_svc
from panel.services import ves as svc
from panel.services.errors import Conflict
from tests import harness
from tests.conftest import run
from tests.console_fixtures import (Screen, asgi, connect, console_pools, handshake_status,  # noqa: F401
                                    session_cookie, start_asgi, ticket)
from tests.tenancy import make_user

pytestmark = pytest.mark.integration


def started(tenant, template="busybox", **kw) -> VE:
    OSTemplate.objects.get_or_create(name=template)
    # The first debian-12 VE of a run makes the golden image: minutes, not seconds.
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=template, **kw), timeout=300).ve_id)
    run(svc.ve_start(ve=ve))
    ve.refresh_from_db()
    return ve


def signed_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def acme(node):
    return Tenant.objects.create(slug="acme", name="Acme")


def test_a_console_runs_a_shell_and_leaves_an_audit_record(acme, asgi):
    oscar = make_user("oscar", tenant=acme, role=Membership.Role.OPERATOR)
    ve = started(acme, hostname="con1")
    c = signed_in(oscar)
    with connect(asgi, ve, ticket(c, ve), session_cookie(c)) as ws:
        screen = Screen(ws)
        screen.until("# ")  # the shell's prompt: it reads what is typed from now on
        ws.send(b"echo hello-$((6*7)); hostname\r")
        screen.until("hello-42")
        screen.until("con1")
        ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 40}))
        time.sleep(0.3)
        ws.send(b"stty size\r")
        screen.until("40 132")
        ws.send(b"exit 7\r")
        assert screen.until_control("exit")["code"] == 7
    s = harness.wait_for(lambda: ConsoleSession.objects.filter(ve=ve, ended_at__isnull=False).first(), 15,
                         what="the session's end")
    assert (s.user, s.kind, s.exit_code, s.close_reason, s.source) == (oscar, "shell", 7, "exited", "web")
    assert s.bytes_in > 20 and s.bytes_out > 20
    opened = AuditEvent.objects.get(action="console.open", detail__session=str(s.pk))
    closed = AuditEvent.objects.get(action="console.close", detail__session=str(s.pk))
    assert opened.actor == closed.actor == oscar and opened.tenant == acme
    # The WebSocket's peer is the client address of both records (the page middleware does
    # not see WebSockets: the consumer sets it).
    assert opened.client_address == closed.client_address == "127.0.0.1" and opened.source == "web"
    assert closed.detail["seconds"] >= 0.3 and closed.detail["exit_code"] == 7


def test_a_replayed_ticket_is_refused(acme, asgi):
    olivia = make_user("olivia", tenant=acme, role=Membership.Role.OWNER)
    ve = started(acme, hostname="con2")
    c = signed_in(olivia)
    tok = ticket(c, ve)
    with connect(asgi, ve, tok, session_cookie(c)) as ws:
        screen = Screen(ws)
        screen.until("# ")
        ws.send(b"echo first\r")
        screen.until("first")
    assert handshake_status(asgi, ve, tok, session_cookie(c)) == 403
    # A made-up ticket and no ticket at all are refused the same way.
    assert handshake_status(asgi, ve, "x" * 43, session_cookie(c)) == 403
    assert handshake_status(asgi, ve, "", session_cookie(c)) == 403
    # A ticket is bound to its user: someone else's session cookie cannot use it.
    other = signed_in(make_user("omar", tenant=acme, role=Membership.Role.OPERATOR))
    assert handshake_status(asgi, ve, ticket(c, ve), session_cookie(other)) == 403
    assert ConsoleSession.objects.filter(ve=ve).count() == 1
    assert AuditEvent.objects.filter(action="access.denied", detail__why="console-ticket").count() == 4


def test_a_cross_origin_handshake_is_refused(acme, asgi):
    olivia = make_user("olivia", tenant=acme, role=Membership.Role.OWNER)
    ve = started(acme, hostname="con3")
    c = signed_in(olivia)
    tok = ticket(c, ve)
    for origin in ("http://evil.example", f"http://127.0.0.1:{asgi.port + 1}", "null", None):
        assert handshake_status(asgi, ve, tok, session_cookie(c), origin=origin) == 403, origin
    assert not ConsoleSession.objects.exists()
    # The Origin is checked before the ticket is spent: the same ticket still works from the panel.
    with connect(asgi, ve, tok, session_cookie(c)) as ws:
        screen = Screen(ws)
        screen.until("# ")
        ws.send(b"echo same-origin\r")
        screen.until("same-origin")


def test_another_tenant_and_a_viewer_are_refused_everywhere(acme, asgi):
    globex = Tenant.objects.create(slug="globex", name="Globex")
    eve = make_user("eve", tenant=globex, role=Membership.Role.OWNER)
    vera = make_user("vera", tenant=acme, role=Membership.Role.VIEWER)
    olivia = make_user("olivia", tenant=acme, role=Membership.Role.OWNER)
    ve = started(acme, hostname="con4")
    for user, status in ((eve, 404), (vera, 403)):
        c = signed_in(user)
        assert c.get(f"/ves/{ve.pk}/console/").status_code == status
        assert c.get(f"/ves/{ve.pk}/console/log/").status_code == status
        assert c.post(f"/ves/{ve.pk}/console/ticket/", {"kind": "shell"}).status_code == status
        assert c.post(f"/ves/{ve.pk}/exec/", {"command": "id", "timeout": 5}).status_code == status
        # A ticket minted by the owner does not open a console for them either.
        owner_ticket = ticket(signed_in(olivia), ve)
        assert handshake_status(asgi, ve, owner_ticket, session_cookie(c)) == 403
    # The viewer's page shows no console; the owner's does.
    assert b"Open console" not in signed_in(vera).get(f"/ves/{ve.pk}/").content
    assert b"Open console" in signed_in(olivia).get(f"/ves/{ve.pk}/").content
    # The customer API's run-command: another tenant's VE is a 404, a viewer token a 403.
    for user, tenant, status in ((eve, globex, 404), (vera, acme, 403)):
        raw = api_tokens.api_token_create(user=user, tenant=tenant)[1]
        r = Client().post(f"/api/v1/ves/{ve.pk}/exec", {"argv": ["id"]}, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert r.status_code == status, r.content
    assert not ConsoleSession.objects.exists()
    assert not Job.objects.filter(kind="exec").exists()


def test_run_command_from_the_page_and_the_api(acme):
    oscar = make_user("oscar", tenant=acme, role=Membership.Role.OPERATOR)
    ve = started(acme, hostname="con5")
    c = signed_in(oscar)
    r = c.post(f"/ves/{ve.pk}/exec/", {"command": "sh -c 'echo out-$((2+3)); exit 3'", "timeout": 20})
    assert r.status_code == 302
    job = run(Job.objects.get(kind="exec", ve=ve))
    assert job.args["argv"] == ["sh", "-c", "echo out-$((2+3)); exit 3"]
    page = c.get(r["Location"]).content.decode()
    assert "out-5" in page and 'id="exec-exit-code">3<' in page
    # Bad input: a clear message, no job.
    r = c.post(f"/ves/{ve.pk}/exec/", {"command": "echo 'unbalanced", "timeout": 20}, follow=True)
    assert "cannot be split into words" in r.content.decode()
    r = c.post(f"/ves/{ve.pk}/exec/", {"command": "id", "timeout": 99999}, follow=True)
    assert Job.objects.filter(kind="exec").count() == 1
    # The API: 202 with the job, and the job's result once it ended; output is bounded.
    raw = api_tokens.api_token_create(user=oscar, tenant=acme)[1]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    r = api.post(f"/api/v1/ves/{ve.pk}/exec", {"argv": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 4"],
                                               "timeout": 30}, content_type="application/json")
    assert r.status_code == 202, r.content
    run(Job.objects.get(pk=r.json()["job"]["id"]))
    body = api.get(f"/api/v1/jobs/{r.json()['job']['id']}").json()
    assert body["result"]["exit_code"] == 4 and body["result"]["truncated"] is True
    assert len(body["result"]["output"]) == 64 * 1024
    r = api.post(f"/api/v1/ves/{ve.pk}/exec", {"argv": []}, content_type="application/json")
    assert r.status_code == 400
    r = api.post(f"/api/v1/ves/{ve.pk}/exec", {"argv": ["a\x00b"]}, content_type="application/json")
    assert r.status_code == 400
    assert Job.objects.filter(kind="exec").count() == 2


def test_consoles_are_bounded_per_ve_and_per_user(acme, settings):
    settings.HAKO_CONSOLE_MAX_PER_VE = 2
    settings.HAKO_CONSOLE_MAX_PER_USER = 2
    oscar = make_user("oscar", tenant=acme, role=Membership.Role.OPERATOR)
    omar = make_user("omar", tenant=acme, role=Membership.Role.OPERATOR)
    a, b = started(acme, hostname="b1"), started(acme, hostname="b2")
    first, _ = console_svc.console_open(ve=a, actor=oscar)
    console_svc.console_open(ve=a, actor=omar)
    with pytest.raises(Conflict, match="2 consoles open already"):
        console_svc.console_open(ve=a, actor=oscar)
    console_svc.console_open(ve=b, actor=oscar)
    with pytest.raises(Conflict, match="You have 2 consoles open"):
        console_svc.console_open(ve=b, actor=oscar)
    assert ConsoleSession.objects.filter(ended_at__isnull=True).count() == 3
    # Closing one frees its place.
    console_svc.console_close(first, reason="test")
    console_svc.console_open(ve=a, actor=oscar)
    # A stopped VE opens none.
    run(svc.ve_stop(ve=b, kill=True))
    b.refresh_from_db()
    with pytest.raises(Conflict, match="not running"):
        console_svc.console_open(ve=b, actor=omar)


def test_an_idle_console_is_closed(acme, stack):
    server = start_asgi(stack, "asgi-console-idle", {"HAKO_CONSOLE_IDLE_TIMEOUT": "2"})
    try:
        olivia = make_user("olivia", tenant=acme, role=Membership.Role.OWNER)
        ve = started(acme, hostname="idle1")
        c = signed_in(olivia)
        with connect(server, ve, ticket(c, ve), session_cookie(c)) as ws:
            assert Screen(ws).until_control("closed", timeout=30)["reason"] == "idle"
        s = harness.wait_for(lambda: ConsoleSession.objects.filter(ended_at__isnull=False).first(), 15,
                             what="the session's end")
        assert s.close_reason == "idle"
        # The node ended the shell too: no lxc-attach of this VE is left on the host.
        harness.wait_for(lambda: not [p for p in _attach_processes() if str(ve.veid) in p], 20,
                         what="the node to end the shell")
    finally:
        server.proc.stop()


def _attach_processes():
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("lxc-attach")]


def _read_until(fd, needle: bytes, seen: bytearray, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} did not appear; the terminal shows:\n{seen[-3000:].decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    if needle not in seen:
        raise AssertionError(f"{needle!r} never appeared:\n{seen[-3000:].decode(errors='replace')}")
    return bytes(seen)


def test_vzctl_enter_through_a_pty(acme, stack, node, debian12, console_pools):
    ve = started(acme, template=debian12, hostname="enter1", node=node)
    assert ve.addresses and ve.addresses[0].startswith("198.18.30.")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "HAKO_DATABASE_URL": stack.db_url}
    proc = subprocess.Popen([sys.executable, "manage.py", "vzctl", "enter", str(ve.veid)], stdin=slave,
                            stdout=slave, stderr=slave, cwd=harness.REPO, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"entered into VE", seen)
        _read_until(master, b"root@enter1", seen)  # bash's prompt
        os.write(master, b"ps -ef\r")
        _read_until(master, b"/sbin/init", seen)
        os.write(master, b"ip addr\r")
        _read_until(master, f"inet {ve.addresses[0]}/32".encode(), seen)
        assert b"venet0" in seen
        os.write(master, b"stty size\r")
        _read_until(master, b"30 100", seen)
        # Ctrl-C reaches the VE's shell, not this command: sleep is interrupted, the shell lives on.
        os.write(master, b"sleep 60\r")
        time.sleep(1)
        os.write(master, b"\x03")
        os.write(master, b"echo after-$((40+2))\r")
        _read_until(master, b"after-42", seen)
        os.write(master, b"exit 5\r")
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    s = ConsoleSession.objects.get(ve=ve)
    assert (s.user, s.source[:3], s.exit_code, s.kind) == (None, "cli", 5, "shell")
    assert AuditEvent.objects.filter(action="console.close", detail__session=str(s.pk)).exists()


def test_the_boot_console_log_and_the_ves_own_tty(acme, asgi, node, debian12):
    olivia = make_user("olivia", tenant=acme, role=Membership.Role.OWNER)
    ve = started(acme, template=debian12, hostname="boot1", node=node)
    c = signed_in(olivia)

    def log_page():
        body = c.get(f"/ves/{ve.pk}/console/log/").content.decode()
        return body if "Debian GNU/Linux 12" in body else None

    page = harness.wait_for(log_page, 30, interval=1, what="systemd's banner in the console log")
    assert 'id="console-log"' in page
    with connect(asgi, ve, ticket(c, ve, kind="tty"), session_cookie(c)) as ws:
        screen = Screen(ws)
        ws.send(b"\r")
        screen.until("login:")
    s = harness.wait_for(lambda: ConsoleSession.objects.filter(ve=ve, ended_at__isnull=False).first(), 15,
                         what="the session's end")
    assert s.kind == "tty"


def test_the_node_refuses_forged_foreign_expired_and_hostile_open_requests():
    """containers/console.py alone: only a well-formed request signed with this node's key,
    for this node and not expired, opens anything."""
    from containers import console as wire
    from containers.messages import MessageError, open_envelope, sign

    key, sid = os.urandom(32), "ab" * 32
    good = wire.open_body(node="n1", session=sid, veid=101, kind="shell", cols=100, rows=30)
    req = wire.OpenRequest.from_body(open_envelope(sign(good, key), key), node="n1")
    assert (req.veid, req.kind, req.cols, req.rows) == (101, "shell", 100, 30)
    with pytest.raises(MessageError, match="bad signature"):
        open_envelope(sign(good, os.urandom(32)), key)
    bad = [({"node": "n2"}, "not 'n1'"), ({"session": "short"}, "session id"), ({"session": "AB" * 32}, "session id"),
           ({"veid": "101; rm -rf /"}, "bad veid"), ({"veid": 10**12}, "bad veid"), ({"kind": "exec"}, "kind"),
           ({"cols": 0}, "window size"), ({"rows": 10**6}, "window size"), ({"cols": "80"}, "window size"),
           ({"expires_at": time.time() - 1}, "expired"), ({"issued_at": time.time() + 3600}, "out of range"),
           ({"type": "job"}, "not a console")]
    for change, message in bad:
        with pytest.raises(MessageError, match=message):
            wire.OpenRequest.from_body({**good, **change}, node="n1")
