"""Bearer tokens shown once and stored as a hash: the mechanics shared by billing tokens
(``hko_``) and personal API tokens (``hkp_``).

A token reads ``<kind>_<12-char prefix>_<secret>``; the prefix finds the row, the SHA-256 of
the whole text is compared in constant time, and the clear text never reaches the database.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from django.utils import timezone

from .errors import InvalidInput

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def token_pattern(kind: str) -> re.Pattern:
    return re.compile(rf"^{kind}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{20,64}})$")


def token_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_token(kind: str) -> tuple[str, str]:
    """A fresh (prefix, full token text) of ``kind`` (e.g. ``hko``)."""
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return prefix, f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"


def hash_matches(stored: str, text: str) -> bool:
    return hmac.compare_digest(stored, token_hash(text))


def expiry_after(days) -> datetime | None:
    """When a token made now with ``expires_days=days`` expires (None: never)."""
    if days is None:
        return None
    if type(days) is not int or not 1 <= days <= 3650:
        raise InvalidInput("expires-days must be between 1 and 3650", field="expires_days")
    return timezone.now() + timedelta(days=days)
