"""RFC 9457 problem details for every API error: ``application/problem+json`` with
``type``, ``title``, ``status``, ``detail`` and ``code`` (plus ``field`` or ``errors``).

Service errors (panel.services.errors) keep their code; DRF's own exceptions (401, 403,
404, 405, 415, 400 validation, 429) are mapped to stable codes.
"""
from __future__ import annotations

from http import HTTPStatus

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from panel.services.errors import ServiceError

PROBLEM_TYPE = "https://hako.invalid/problems/"
CONTENT_TYPE = "application/problem+json"

DRF_CODES = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not-found",
    exceptions.MethodNotAllowed: "method-not-allowed",
    exceptions.NotAcceptable: "not-acceptable",
    exceptions.UnsupportedMediaType: "unsupported-media-type",
    exceptions.ParseError: "bad-request",
    exceptions.ValidationError: "validation-failed",
    exceptions.Throttled: "rate-limited",
}


def problem(status: int, code: str, detail: str, **extra) -> dict:
    """The problem document for ``status``/``code`` (a dict, stored as is by idempotency)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail, "code": code,
            **extra}


def problem_response(body: dict, headers: dict | None = None) -> Response:
    return Response(body, status=body["status"], content_type=CONTENT_TYPE, headers=headers)


class ProblemError(exceptions.APIException):
    """Raise from a view for a problem that is neither a service nor a DRF error."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status_code = status
        self.problem_code = code


def problem_for(exc) -> tuple[dict, dict] | None:
    """(problem body, extra headers) for ``exc``, or None for an unexpected exception."""
    if isinstance(exc, ServiceError):
        extra = {"field": exc.field} if exc.field else {}
        return problem(exc.status, exc.code, exc.message, **extra), {}
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, ProblemError):
        return problem(exc.status_code, exc.problem_code, str(exc.detail)), headers
    code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        errors = []
        _flatten(exc.detail, "", errors)
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors[:5])
        return problem(exc.status_code, code, detail or "invalid request", errors=errors), headers
    return problem(exc.status_code, code, str(exc.detail)), headers


def _flatten(detail, field: str, out: list) -> None:
    if isinstance(detail, dict):
        for k, v in detail.items():
            _flatten(v, f"{field}.{k}" if field else str(k), out)
    elif isinstance(detail, list):
        for v in detail:
            _flatten(v, field, out)
    else:
        out.append({"field": "" if field == "non_field_errors" else field, "message": str(detail),
                    "code": getattr(detail, "code", "invalid")})


def exception_handler(exc, context):
    """DRF exception handler: every error as problem+json (None: let Django answer 500)."""
    found = problem_for(exc)
    if found is None:
        return None
    body, headers = found
    return problem_response(body, headers)
