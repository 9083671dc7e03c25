"""Signal receivers: every sign-in and every failed sign-in is an audit record (R17).

Connected in PanelConfig.ready(). The record's ``source`` is the channel (web: the sign-in
page, Django's admin and SSO links all come through the browser); its client address is
the request's (panel.middleware.request_address, proxy-aware only for trusted proxies).
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed

from .middleware import request_address
from .services.audit import audit


def _address(request) -> str | None:
    return request_address(request) if getattr(request, "META", None) is not None else None


def on_logged_in(sender, request, user, **kwargs):
    audit(action="auth.login", actor=user, source="web", address=_address(request),
          detail={"backend": str(getattr(user, "backend", ""))[:100]})


def on_login_failed(sender, credentials, request=None, **kwargs):
    # Django has already masked the password in ``credentials``; only the name is kept.
    field = get_user_model().USERNAME_FIELD
    name = credentials.get(field) or credentials.get("username") or ""
    audit(action="auth.login_failed", result="failed", source="web" if request is not None else "",
          address=_address(request),
          detail={"username": str(name)[:150]})


def connect() -> None:
    user_logged_in.connect(on_logged_in, dispatch_uid="hako.audit.login")
    user_login_failed.connect(on_login_failed, dispatch_uid="hako.audit.login_failed")
