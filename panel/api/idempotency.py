"""``Idempotency-Key`` for every mutating billing call (draft-ietf-httpapi-idempotency-key).

Insert first: the record (account, key, request hash) is committed before the call runs,
under a unique constraint, so of two concurrent requests with one key exactly one runs; the
other finds the row without a response and gets 409 ``idempotency-key-in-progress``. The
response (status and body, errors included once the call ran) is stored on the row; a
replay with the same request returns it, the same key on another request is 422
``idempotency-key-reused``. An unexpected crash deletes the row, so the key can be retried.
"""
from __future__ import annotations

import hashlib
import json

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from panel.models import IdempotencyRecord

from .problems import ProblemError, problem_for, problem_response

HEADER = "Idempotency-Key"
KEY_MAX = 255


def request_hash(request) -> str:
    body = request.data if isinstance(request.data, (dict, list)) else {}
    canonical = json.dumps([request.method, request.path, body], sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key(request) -> str:
    key = request.headers.get(HEADER, "")
    if not key:
        raise ProblemError(400, "idempotency-key-missing", f"this call needs an {HEADER} header")
    if len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        raise ProblemError(400, "idempotency-key-invalid",
                           f"{HEADER} must be 1-{KEY_MAX} printable ASCII characters")
    return key


def _replay(record, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        raise ProblemError(422, "idempotency-key-reused",
                           "this Idempotency-Key was used for a different request; use a new key")
    if record.status_code is None:
        raise ProblemError(409, "idempotency-key-in-progress",
                           "a request with this Idempotency-Key is still being processed; retry later")
    headers = {"Idempotent-Replayed": "true"}
    if record.status_code >= 400:
        return problem_response(record.response_body, headers)
    return Response(record.response_body, status=record.status_code, headers=headers)


def idempotent(request, account, call, *, model=IdempotencyRecord, owner: dict | None = None,
               required: bool = True) -> Response:
    """Run ``call()`` (returning a Response) once per (owner, key); replay otherwise.

    ``owner`` (default ``{"account": account}``) and ``model`` scope the keys: the customer
    API keeps them per personal token (CustomerIdempotencyRecord). Without ``required``, a
    request without the header simply runs."""
    if not required and not request.headers.get(HEADER):
        return call()
    owner = {"account": account} if owner is None else owner
    key = _key(request)
    fingerprint = request_hash(request)
    try:
        with transaction.atomic():
            record = model.objects.create(**owner, key=key, method=request.method,
                                          path=request.path[:512], request_hash=fingerprint)
    except IntegrityError:
        record = model.objects.filter(**owner, key=key).first()
        if record is None:  # its first request crashed and released the key meanwhile
            raise ProblemError(409, "idempotency-key-in-progress", "retry this request") from None
        return _replay(record, fingerprint)
    try:
        response = call()
    except Exception as exc:
        found = problem_for(exc)
        if found is None:
            model.objects.filter(pk=record.pk).delete()
            raise
        body, headers = found
        response = problem_response(body, headers)
    model.objects.filter(pk=record.pk).update(
        status_code=response.status_code, response_body=response.data, completed_at=timezone.now())
    return response
