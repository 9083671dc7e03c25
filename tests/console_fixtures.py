"""Fixtures the console tests share: a live ASGI server (uvicorn on panel.asgi, the same
process `make run` starts) against the test database and broker, the console test pools,
and a small WebSocket client.

The pools (198.18.30.0/24, fd00:30::/64) get an `unreachable` route from the node and
lose it at the end, so that no address of theirs ever routes off the machine."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from tests import harness

POOL4, POOL6 = "198.18.30.0/24", "fd00:30::/64"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Asgi:
    def __init__(self, proc: harness.Proc, port: int):
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"


def start_asgi(stack, name: str, extra_env: dict | None = None) -> Asgi:
    from django.conf import settings

    port = free_port()
    proc = harness.Proc(name, [harness.PYTHON, "-m", "uvicorn", "panel.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "info"],
                        {"HAKO_DATABASE_URL": stack.db_url, "HAKO_BROKER_URL": harness.os.environ["HAKO_BROKER_URL"],
                         "DJANGO_SETTINGS_MODULE": "panel.settings",
                         # the test process's key, so that its session cookies are valid there
                         "HAKO_SECRET_KEY": settings.SECRET_KEY, **(extra_env or {})}).start()

    def up():
        if not proc.alive():
            raise AssertionError(f"uvicorn exited:\n{proc.log_since_start()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    harness.wait_for(up, 60, interval=0.1, what="the ASGI server")
    return Asgi(proc, port)


@pytest.fixture
def asgi(stack, transactional_db):
    server = start_asgi(stack, "asgi-console")
    yield server
    server.proc.stop()


@pytest.fixture
def console_pools(node):
    from panel.models import Job
    from panel.services import network as net
    from tests.conftest import run

    p4 = net.pool_create(name="c4", network=POOL4, nodes=[node], range_start="198.18.30.10",
                         range_end="198.18.30.99")
    p6 = net.pool_create(name="c6", network=POOL6, nodes=[node])
    run(Job.objects.filter(kind="node_config").order_by("-created_at").first())
    yield p4, p6
    for cidr in (POOL4, POOL6):
        subprocess.run(["ip", "route", "del", "unreachable", cidr], capture_output=True, timeout=30)


def session_cookie(client) -> str:
    return f"sessionid={client.cookies['sessionid'].value}"


def ticket(client, ve, kind="shell") -> str:
    r = client.post(f"/ves/{ve.pk}/console/ticket/", {"kind": kind})
    assert r.status_code == 200, r.content
    return r.json()["ticket"]


def connect(asgi: Asgi, ve, tok: str, cookie: str, origin: str | None = "same", cols=80, rows=24):
    from websockets.sync.client import connect as ws_connect

    kw = {"additional_headers": {"Cookie": cookie}, "open_timeout": 15}
    if origin is not None:
        kw["origin"] = asgi.url if origin == "same" else origin
    return ws_connect(f"{asgi.ws}/ws/console/{ve.pk}/?ticket={tok}&cols={cols}&rows={rows}", **kw)


def handshake_status(asgi, ve, tok, cookie, origin="same") -> int:
    """The HTTP status a handshake gets (101 when it is accepted)."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = connect(asgi, ve, tok, cookie, origin)
    except InvalidStatus as e:
        return e.response.status_code
    ws.close()
    return 101


class Screen:
    """What a console printed so far, read from a WebSocket until a text appears. Like a
    terminal, it answers a cursor position query (busybox's shell asks, and takes what is
    typed meanwhile for the answer)."""

    def __init__(self, ws):
        self.ws, self.text, self.control = ws, "", []

    def until(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} did not appear; the console shows:\n{self.text[-3000:]}")
            try:
                msg = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            if isinstance(msg, bytes):
                self.text += msg.decode(errors="replace")
                if b"\x1b[6n" in msg:
                    self.ws.send(b"\x1b[24;5R")
            else:
                self.control.append(json.loads(msg))
                if self.control[-1].get("type") in ("exit", "closed", "error"):
                    if needle not in self.text:
                        raise AssertionError(f"console ended ({self.control[-1]}) before {needle!r}:\n"
                                             f"{self.text[-3000:]}")
        return self.text

    def until_control(self, kind: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for c in self.control:
                if c.get("type") == kind:
                    return c
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} message; got {self.control}; screen:\n{self.text[-2000:]}")
            try:
                msg = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            except Exception:  # closed by the server: the control message came before
                for c in self.control:
                    if c.get("type") == kind:
                        return c
                raise
            if isinstance(msg, bytes):
                self.text += msg.decode(errors="replace")
            else:
                self.control.append(json.loads(msg))
