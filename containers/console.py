"""The VE console: a relay inside the node agent between a pty and Redis.

Why a relay and not a job: a console lives for minutes or hours, and the agent's Celery
pool has a few prefork slots meant for short jobs. So the agent runs one relay thread
(started next to the heartbeat) that waits for *signed* open requests on its own Redis
list and gives each session two threads of its own; no Celery slot is ever held.

Protocol (this module is Django-free; the panel imports its names and frame helpers):

* ``hako:console:open:<node>``: a list of envelopes signed with the node's key
  (:func:`containers.messages.sign`) whose body says which VE, which kind (``shell``: a
  pty on ``lxc-attach``; ``tty``: a pty on ``lxc-console``, the VE's own console;
  ``log``: the tail of the VE's console log), the window size, a session id (64 hex
  characters from a CSPRNG: knowing it is what lets one speak to the session) and an
  expiry a few seconds ahead. Anything unsigned, foreign or expired is dropped.
* ``hako:console:<session>:in``: frames from the panel: ``d`` + bytes typed, ``r`` +
  JSON ``{"cols", "rows"}`` (a resize, a control frame), ``p`` (keep-alive) and ``c``
  (close). A session that hears nothing for ``STALE_SECONDS`` is closed: its panel end
  is gone.
* ``hako:console:<session>:out``: frames to the panel: ``d`` + bytes the pty wrote, ``x``
  + JSON ``{"exit_code"}`` at the end, ``e`` + a message when the session could not open.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from dataclasses import dataclass

from . import messages as m

log = logging.getLogger("hako.console")

KINDS = ("shell", "tty", "log")
SESSION_RE = re.compile(r"^[0-9a-f]{64}$")
OPEN_TTL = 30               # seconds an open request stays valid on the broker
STALE_SECONDS = 30          # no frame from the panel for this long: the session is closed
PING_SECONDS = 5            # how often the panel's end sends a keep-alive
KEY_TTL = 120               # Redis keys of a session vanish this long after their last use
MAX_SESSIONS = 64           # per node agent, whatever the panel's own bounds say
LOG_TAIL_BYTES = 64 * 1024  # the console log shown in the panel
READ_CHUNK = 32 * 1024
MAX_COLS, MAX_ROWS = 1000, 1000
ENV = ("TERM=xterm-256color", "HOME=/root", "LANG=C.UTF-8",
       "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")

F_DATA, F_RESIZE, F_PING, F_CLOSE, F_EXIT, F_ERROR = b"d", b"r", b"p", b"c", b"x", b"e"


def open_queue(node: str) -> str:
    return f"hako:console:open:{node}"


def in_key(session: str) -> str:
    return f"hako:console:{session}:in"


def out_key(session: str) -> str:
    return f"hako:console:{session}:out"


def resize_frame(cols: int, rows: int) -> bytes:
    return F_RESIZE + json.dumps({"cols": cols, "rows": rows}).encode()


def exit_frame(code) -> bytes:
    return F_EXIT + json.dumps({"exit_code": code}).encode()


def check_size(cols, rows) -> tuple[int, int]:
    if type(cols) is not int or type(rows) is not int or not (1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS):
        raise m.MessageError(f"window size must be 1-{MAX_COLS} columns and 1-{MAX_ROWS} rows")
    return cols, rows


def open_body(*, node: str, session: str, veid: int, kind: str, cols: int = 80, rows: int = 24,
              now: float | None = None) -> dict:
    """The body of an open request (panel side); sign it with the node's key."""
    now = time.time() if now is None else now
    return {"type": "console_open", "node": node, "session": session, "veid": veid, "kind": kind,
            "cols": cols, "rows": rows, "issued_at": now, "expires_at": now + OPEN_TTL}


@dataclass(frozen=True)
class OpenRequest:
    """A verified open request as the node sees it."""

    session: str
    veid: int
    kind: str
    cols: int
    rows: int

    @classmethod
    def from_body(cls, body: dict, *, node: str, now: float | None = None) -> "OpenRequest":
        now = time.time() if now is None else now
        if body.get("type") != "console_open":
            raise m.MessageError("not a console open request")
        if body.get("node") != node:
            raise m.MessageError(f"console request is for node {body.get('node')!r}, not {node!r}")
        session = body.get("session")
        if not isinstance(session, str) or not SESSION_RE.match(session):
            raise m.MessageError("bad console session id")
        veid = body.get("veid")
        lo, hi = m.LIMITS["veid"]
        if type(veid) is not int or not lo <= veid <= hi:
            raise m.MessageError("bad veid")
        kind = body.get("kind")
        if kind not in KINDS:
            raise m.MessageError(f"unknown console kind {kind!r}")
        cols, rows = check_size(body.get("cols"), body.get("rows"))
        issued, expires = body.get("issued_at"), body.get("expires_at")
        if not isinstance(issued, (int, float)) or not isinstance(expires, (int, float)):
            raise m.MessageError("missing timestamps")
        if now > expires:
            raise m.MessageError(f"console request expired {now - expires:.1f}s ago")
        if issued > now + 30 or expires - issued > OPEN_TTL + 1:
            raise m.MessageError("console request timestamps are out of range")
        return cls(session=session, veid=veid, kind=kind, cols=cols, rows=rows)


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ConsoleRelay:
    """Accepts signed open requests for this node and runs their sessions (one thread
    each way per session). ``runtime`` is the agent's :class:`containers.runtime.Runtime`."""

    def __init__(self, cfg, runtime, redis_url: str | None = None):
        import redis

        self.cfg, self.runtime = cfg, runtime
        self._redis = lambda: redis.Redis.from_url(redis_url or cfg.broker_url)
        self.r = self._redis()
        self.sessions: dict[str, "Session"] = {}
        self.lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        queue = open_queue(self.cfg.node)
        while not stop.is_set():
            try:
                item = self.r.blpop([queue], timeout=1)
            except Exception:  # Redis restarting: retry, never let the thread die
                log.exception("console relay: reading open requests failed")
                stop.wait(1)
                continue
            if item is not None:
                self.handle(item[1])
        for s in list(self.sessions.values()):
            s.close()

    def handle(self, raw: bytes) -> None:
        try:
            body = m.open_envelope(json.loads(raw), self.cfg.key)
            req = OpenRequest.from_body(body, node=self.cfg.node)
        except (ValueError, m.MessageError) as e:
            log.warning("console relay: refused open request: %s", e)
            return
        with self.lock:
            if req.session in self.sessions:
                log.warning("console relay: session %s… opened twice; refused", req.session[:8])
                return
            if len(self.sessions) >= MAX_SESSIONS:
                self.reply(req.session, F_ERROR + b"this node has too many open consoles")
                return
            if req.kind == "log":
                self.reply(req.session, F_DATA + self.log_tail(req.veid), exit_frame(0))
                return
            if not self.runtime.is_running(req.veid):
                self.reply(req.session, F_ERROR + f"VE {req.veid} is not running".encode())
                return
            session = Session(self, req)
            self.sessions[req.session] = session
        try:
            session.start()
        except OSError as e:
            self.forget(req.session)
            self.reply(req.session, F_ERROR + f"cannot open the console: {e.strerror}".encode())

    def reply(self, session: str, *frames: bytes, r=None) -> None:
        r = r or self.r
        key = out_key(session)
        pipe = r.pipeline()
        pipe.rpush(key, *frames)
        pipe.expire(key, KEY_TTL)
        pipe.execute()

    def forget(self, session: str) -> None:
        with self.lock:
            self.sessions.pop(session, None)

    def log_tail(self, veid: int) -> bytes:
        """The last LOG_TAIL_BYTES of the VE's console log (lxc.console.logfile)."""
        path = self.runtime.ctdir(veid) / "console.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                return f.read(LOG_TAIL_BYTES)
        except FileNotFoundError:
            return b""

    def argv(self, req: OpenRequest) -> list[str]:
        if req.kind == "tty":
            # The VE's /dev/console (tty 0), where init and getty speak: the way in when
            # sshd or init is broken. Ctrl-a q detaches, as in lxc-console itself.
            return self.runtime.lxc("console", req.veid, "-t", "0")
        env = [a for pair in (("-v", e) for e in ENV) for a in pair]
        # No command: lxc-attach runs root's login shell from the VE's own /etc/passwd and,
        # its stdin being a tty, gives it a pty inside the VE (job control, Ctrl-C).
        return self.runtime.lxc("attach", req.veid, "--clear-env", *env)


def _become_tty_leader() -> None:  # runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Session:
    """One console: a child on a pty, its output pumped to Redis, Redis frames to its input."""

    def __init__(self, relay: ConsoleRelay, req: OpenRequest):
        self.relay, self.req = relay, req
        self.proc: subprocess.Popen | None = None
        self.master = -1
        self.done = threading.Event()
        self.last_heard = time.monotonic()

    def start(self) -> None:
        master, slave = os.openpty()
        try:
            set_winsize(slave, self.req.cols, self.req.rows)
            self.proc = subprocess.Popen(self.relay.argv(self.req), stdin=slave, stdout=slave, stderr=slave,
                                         cwd="/", close_fds=True, preexec_fn=_become_tty_leader)
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        log.info("console %s… opened: %s of VE %s", self.req.session[:8], self.req.kind, self.req.veid)
        threading.Thread(target=self.pump_out, name=f"console-out-{self.req.session[:8]}", daemon=True).start()
        threading.Thread(target=self.pump_in, name=f"console-in-{self.req.session[:8]}", daemon=True).start()

    def pump_out(self) -> None:
        r = self.relay._redis()
        try:
            while not self.done.is_set():
                ready, _, _ = select.select([self.master], [], [], 1.0)
                if not ready:
                    if self.proc.poll() is not None:
                        break
                    continue
                try:
                    data = os.read(self.master, READ_CHUNK)
                except OSError:  # EIO: every holder of the pty's other end is gone
                    break
                if not data:
                    break
                self.relay.reply(self.req.session, F_DATA + data, r=r)
        except Exception:
            log.exception("console %s…: output pump failed", self.req.session[:8])
        finally:
            self.finish(r)

    def pump_in(self) -> None:
        r = self.relay._redis()
        key = in_key(self.req.session)
        try:
            while not self.done.is_set():
                item = r.blpop([key], timeout=1)
                now = time.monotonic()
                if item is None:
                    if now - self.last_heard > STALE_SECONDS:
                        log.info("console %s…: the panel's end went silent; closing", self.req.session[:8])
                        break
                    continue
                self.last_heard = now
                frame = item[1]
                kind, payload = frame[:1], frame[1:]
                if self.master < 0:  # the child is gone and its pty closed
                    break
                if kind == F_DATA:
                    os.write(self.master, payload)
                elif kind == F_RESIZE:
                    try:
                        size = json.loads(payload)
                        set_winsize(self.master, *check_size(size.get("cols"), size.get("rows")))
                    except (ValueError, AttributeError, m.MessageError, OSError):
                        continue
                elif kind == F_CLOSE:
                    break
        except Exception:
            log.exception("console %s…: input pump failed", self.req.session[:8])
        finally:
            self.close()

    def close(self) -> None:
        """End the child (its whole session: lxc-attach and what it started)."""
        self.done.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGHUP, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def finish(self, r) -> None:
        self.close()
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.relay.reply(self.req.session, exit_frame(code), r=r)
        r.delete(in_key(self.req.session))
        self.relay.forget(self.req.session)
        log.info("console %s… closed (exit %s)", self.req.session[:8], code)
