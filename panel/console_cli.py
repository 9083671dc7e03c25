"""``manage.py vzctl enter VEID`` / ``vzctl console VEID``: the VE console in the terminal
the command runs in, through the same Redis relay as the browser's (services.console).

The local terminal goes to raw mode (every key, Ctrl-C included, goes to the VE), its
window size is sent at open and on every SIGWINCH, and the command exits with the code of
the VE's shell. Only the panel host's administrator runs management commands (staff).
"""
from __future__ import annotations

import json
import os
import select
import signal
import termios
import threading
import time
import tty

from django.conf import settings

from containers import console as wire
from panel.services import console as svc


def _size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return max(1, min(size.columns, wire.MAX_COLS)), max(1, min(size.lines, wire.MAX_ROWS))
    except OSError:
        return 80, 24


def run_terminal(*, ve, kind: str = "shell", source: str = "cli", stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Relay between this process's terminal and a new console session on ``ve``; returns
    the exit code of the VE's side (255 if it ended without one)."""
    cols, rows = _size(stdin_fd)
    session, relay_id = svc.console_open(ve=ve, actor=None, kind=kind, cols=cols, rows=rows, source=source)
    r = svc.redis_client()
    in_key, out_key = wire.in_key(relay_id), wire.out_key(relay_id)
    done = threading.Event()
    state = {"code": None, "error": None, "bytes_out": 0, "bytes_in": 0, "last": time.monotonic(),
             "reason": "closed"}

    def push(frame: bytes) -> None:
        pipe = r.pipeline(transaction=False)
        pipe.rpush(in_key, frame)
        pipe.expire(in_key, wire.KEY_TTL)
        pipe.execute()

    def reader() -> None:
        while not done.is_set():
            item = r.blpop([out_key], timeout=1)
            if item is None:
                continue
            frame = item[1]
            if frame[:1] == wire.F_DATA:
                state["bytes_out"] += len(frame) - 1
                state["last"] = time.monotonic()
                os.write(stdout_fd, frame[1:])
            elif frame[:1] == wire.F_EXIT:
                state["code"] = json.loads(frame[1:]).get("exit_code")
                state["reason"] = "exited"
                break
            elif frame[:1] == wire.F_ERROR:
                state["error"] = frame[1:].decode(errors="replace")
                state["reason"] = "node-error"
                break
        done.set()

    is_tty = os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if is_tty else None
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: push(wire.resize_frame(*_size(stdin_fd))))
    t = threading.Thread(target=reader, name="console-reader", daemon=True)
    try:
        if is_tty:
            tty.setraw(stdin_fd)
        t.start()
        pinged = touched = time.monotonic()
        while not done.is_set():
            try:
                ready, _, _ = select.select([stdin_fd], [], [], 0.5)
            except InterruptedError:  # SIGWINCH
                continue
            now = time.monotonic()
            if ready:
                data = os.read(stdin_fd, 4096)
                if not data:  # our stdin closed: end the session
                    break
                state["bytes_in"] += len(data)
                state["last"] = now
                push(wire.F_DATA + data)
            if now - pinged > wire.PING_SECONDS:
                pinged = now
                push(wire.F_PING)
            if now - touched > 60:  # keeps the session counted as open (services.console)
                touched = now
                svc.console_touch(session)
            if now - state["last"] > settings.HAKO_CONSOLE_IDLE_TIMEOUT:
                state["reason"] = "idle"
                break
    finally:
        done.set()
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old_winch)
        push(wire.F_CLOSE)
        t.join(timeout=3)
        svc.console_close(session, bytes_in=state["bytes_in"], bytes_out=state["bytes_out"],
                          exit_code=state["code"], reason=state["reason"])
    if state["error"]:
        raise svc.Unavailable(state["error"])
    return state["code"] if isinstance(state["code"], int) else 255
