"""The VE console's WebSocket: relays between a browser's terminal and Redis, where the
node agent's console relay (containers/console.py) holds the other end.

Handshake: the Origin must be the panel's own (the request's host, itself an allowed
host) or one of CSRF_TRUSTED_ORIGINS; the signed-in user must bring a ticket minted for
them and this VE by the VE page (consumed here, once); the role is checked again through
the access door. Anything else closes the handshake with 403 before it is accepted.

Frames from the browser: binary = bytes typed; text = JSON control (``{"type": "resize",
"cols", "rows"}``). To the browser: binary = terminal output; text = JSON ``{"type":
"exit", "code"}``, ``{"type": "closed", "reason"}`` or ``{"type": "error", "message"}``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from containers import console as wire
from panel import access
from panel.middleware import request_address
from panel.models import Membership
from panel.services import console as svc
from panel.services.audit import client_address
from panel.services.errors import ServiceError

log = logging.getLogger("hako.console")

MAX_INPUT_FRAME = 64 * 1024
TOUCH_SECONDS = 60
NODE_ANSWER_SECONDS = 20


def _header(scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return ""


def origin_ok(scope) -> bool:
    """Same rule as Django's CSRF origin check: the Origin is this request's own scheme and
    host (an allowed host), or listed in CSRF_TRUSTED_ORIGINS. A missing Origin fails."""
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    host = _header(scope, b"host")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == origin.rstrip("/") and origin.rstrip("/") == f"{scheme}://{host}"


def _peer(scope) -> str | None:
    """The WebSocket client's address, for the session's audit records: the HTTP
    middleware that fills it for pages does not see WebSockets. The same rule: the ASGI
    peer, or X-Forwarded-For only when the peer is a trusted proxy."""
    client = scope.get("client")
    meta = {"REMOTE_ADDR": client[0] if client else "",
            "HTTP_X_FORWARDED_FOR": _header(scope, b"x-forwarded-for") or ""}
    return request_address(SimpleNamespace(META=meta))


def _open(user, ve_id, ticket: str, cols: int, rows: int, address: str | None = None):
    """Consume the ticket and open the session (sync: ORM and Redis)."""
    from panel.access import audit_denial

    with client_address(address, "web"):
        data = svc.ticket_consume(ticket)
        if (not data or not getattr(user, "is_authenticated", False) or data.get("user") != user.pk
                or data.get("ve") != str(ve_id)):
            audit_denial(user, None, "console-ticket", {"ve": str(ve_id)[:64]}, "web")
            raise PermissionError("no valid console ticket")
        ve = access.ve_get(user, ve_id, min_role=Membership.Role.OPERATOR)
        return svc.console_open(ve=ve, actor=user, kind=data.get("kind", "shell"), cols=cols, rows=rows,
                                source="web")


def _close(session, address: str | None, **kwargs):
    with client_address(address, "web"):
        return svc.console_close(session, **kwargs)


class ConsoleConsumer(AsyncWebsocketConsumer):
    """One browser terminal bound to one console session on a node."""

    session = None

    async def connect(self):
        self.tasks: list[asyncio.Task] = []
        self.bytes_in = self.bytes_out = 0
        self.exit_code = None
        self.reason = "closed"
        if not origin_ok(self.scope):
            log.warning("console: handshake from a foreign origin %r refused", _header(self.scope, b"origin"))
            await self.close(code=4403)
            return
        qs = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            cols = int(qs.get("cols", ["80"])[0])
            rows = int(qs.get("rows", ["24"])[0])
        except ValueError:
            cols, rows = 80, 24
        try:
            self.session, self.relay_id = await database_sync_to_async(_open)(
                self.scope.get("user"), self.scope["url_route"]["kwargs"]["ve_id"], qs.get("ticket", [""])[0],
                max(1, min(cols, wire.MAX_COLS)), max(1, min(rows, wire.MAX_ROWS)), _peer(self.scope))
        except (PermissionError, ServiceError) as e:
            log.info("console: handshake refused: %s", getattr(e, "message", e))
            await self.close(code=4403)
            return
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.last_activity = time.monotonic()
        await self.accept()
        self.tasks = [asyncio.create_task(self.pump_out()), asyncio.create_task(self.keepalive())]

    async def push(self, frame: bytes) -> None:
        key = wire.in_key(self.relay_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, frame)
            pipe.expire(key, wire.KEY_TTL)
            await pipe.execute()

    async def receive(self, text_data=None, bytes_data=None):
        if self.session is None:
            return
        if bytes_data is not None:
            data = bytes_data[:MAX_INPUT_FRAME]
        else:
            try:
                msg = json.loads(text_data or "")
            except ValueError:
                return
            if not isinstance(msg, dict):
                return
            if msg.get("type") == "resize":
                cols, rows = msg.get("cols"), msg.get("rows")
                if type(cols) is int and type(rows) is int and 0 < cols <= wire.MAX_COLS and 0 < rows <= wire.MAX_ROWS:
                    await self.push(wire.resize_frame(cols, rows))
                return
            if msg.get("type") != "data" or not isinstance(msg.get("data"), str):
                return
            data = msg["data"].encode()[:MAX_INPUT_FRAME]
        self.bytes_in += len(data)
        self.last_activity = time.monotonic()
        await self.push(wire.F_DATA + data)

    async def pump_out(self):
        key = wire.out_key(self.relay_id)
        opened, heard = time.monotonic(), False
        try:
            while True:
                item = await self.redis.blpop([key], timeout=1)
                if item is None:
                    # Both lxc-attach (a prompt) and lxc-console (its banner) speak at once:
                    # silence means the node agent is down or never got the request.
                    if not heard and time.monotonic() - opened > NODE_ANSWER_SECONDS:
                        self.reason = "node-silent"
                        # No message: the page shows its own translated text for this code.
                        await self.send(text_data=json.dumps({"type": "error", "code": "node-silent"}))
                        await self.close(code=1011)
                        return
                    continue
                heard = True
                frame = item[1]
                kind, payload = frame[:1], frame[1:]
                if kind == wire.F_DATA:
                    self.bytes_out += len(payload)
                    self.last_activity = time.monotonic()
                    await self.send(bytes_data=payload)
                elif kind == wire.F_EXIT:
                    self.exit_code = json.loads(payload).get("exit_code")
                    self.reason = "exited"
                    await self.send(text_data=json.dumps({"type": "exit", "code": self.exit_code}))
                    await self.close(code=1000)
                    return
                elif kind == wire.F_ERROR:
                    self.reason = "node-error"
                    await self.send(text_data=json.dumps({"type": "error",
                                                          "message": payload.decode(errors="replace")}))
                    await self.close(code=1011)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("console: output relay failed")
            self.reason = "relay-error"
            await self.close(code=1011)

    async def keepalive(self):
        touched = time.monotonic()
        try:
            while True:
                await asyncio.sleep(wire.PING_SECONDS)
                await self.push(wire.F_PING)
                now = time.monotonic()
                if now - self.last_activity > settings.HAKO_CONSOLE_IDLE_TIMEOUT:
                    self.reason = "idle"
                    await self.send(text_data=json.dumps({"type": "closed", "reason": "idle"}))
                    await self.close(code=4000)
                    return
                if now - touched > TOUCH_SECONDS:
                    touched = now
                    await database_sync_to_async(svc.console_touch)(self.session)
        except asyncio.CancelledError:
            raise

    async def disconnect(self, code):
        for t in self.tasks:
            t.cancel()
        if self.session is None:
            return
        try:
            await self.push(wire.F_CLOSE)  # the node ends the child (a no-op if it exited)
        finally:
            await database_sync_to_async(_close)(
                self.session, _peer(self.scope), bytes_in=self.bytes_in, bytes_out=self.bytes_out, exit_code=self.exit_code,
                reason=self.reason)
            await self.redis.aclose()
            self.session = None
