"""Signal receivers: every sign-in and every failed sign-in is an audit record (R17).

Connected in PanelConfig.ready(). The source address is the peer address of the request;
the web issue makes it proxy-aware together with the brute-force lockout.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed

from .services.audit import audit


def request_source(request) -> str:
    """The address a request came from, for audit records ('' without a request)."""
    if request is None:
        return ""
    return str(getattr(request, "META", {}).get("REMOTE_ADDR", ""))[:64]


def on_logged_in(sender, request, user, **kwargs):
    audit(action="auth.login", actor=user, source=request_source(request),
          detail={"backend": str(getattr(user, "backend", ""))[:100]})


def on_login_failed(sender, credentials, request=None, **kwargs):
    # Django has already masked the password in ``credentials``; only the name is kept.
    field = get_user_model().USERNAME_FIELD
    name = credentials.get(field) or credentials.get("username") or ""
    audit(action="auth.login_failed", result="failed", source=request_source(request),
          detail={"username": str(name)[:150]})


def connect() -> None:
    user_logged_in.connect(on_logged_in, dispatch_uid="hako.audit.login")
    user_login_failed.connect(on_login_failed, dispatch_uid="hako.audit.login_failed")
