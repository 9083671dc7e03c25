"""Parsing and checking of user input for VE parameters.

Every interface (CLI, web, API, billing) funnels input through here, and the node checks
the resulting spec again (containers.messages.VESpec) because the broker is not trusted.
"""
from __future__ import annotations

import re

from django.utils.translation import gettext as _

from containers.messages import HOSTNAME_RE, LIMIT_FLOORS, LIMITS, MiB, limit_ok

from .errors import InvalidInput, field_label

# ASCII digits only: \d would take other scripts' digits ("１G"), which int() reads.
_SIZE_RE = re.compile(r"^([0-9]{1,16})([KMGTP]?)B?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def parse_size(value, *, field: str, default_unit: str = "") -> int:
    """Parse ``512M``, ``1G`` or a bare number (in ``default_unit``) into bytes."""
    if isinstance(value, bool):
        raise InvalidInput(_("%(field)s: expected a size like 512M or 2G") % {"field": field_label(field)}, field=field)
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip()
        m = _SIZE_RE.match(text)
        if not m:
            raise InvalidInput(_("%(field)s: %(text)r is not a size (use a number with K, M, G or T)")
                               % {"field": field_label(field), "text": text[:40]}, field=field)
        n = int(m.group(1)) * _UNITS[(m.group(2) or default_unit).upper()]
    return check_range(n, field=field)


def parse_int(value, *, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(_("%(field)s: expected a whole number") % {"field": field_label(field)}, field=field)
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip()
        if not re.fullmatch(r"[0-9]{1,12}", text):
            raise InvalidInput(_("%(field)s: %(text)r is not a whole number")
                               % {"field": field_label(field), "text": text[:40]}, field=field)
        n = int(text)
    return check_range(n, field=field)


def check_range(n: int, *, field: str) -> int:
    lo, hi = LIMITS[field]
    if not limit_ok(field, n):
        if field in ("memory", "swap", "disk"):
            raise InvalidInput(_("%(field)s must be between %(low)s and %(high)s")
                               % {"field": field_label(field), "low": human_size(lo) if lo else 0,
                                  "high": human_size(hi)}, field=field)
        if field == "iolimit":
            raise InvalidInput(_("iolimit must be 0 (no limit) or between %(low)s and %(high)s per second")
                               % {"low": human_size(LIMIT_FLOORS[field]), "high": human_size(hi)}, field=field)
        if field in LIMIT_FLOORS:
            raise InvalidInput(_("%(field)s must be 0 (no limit) or between %(low)s and %(high)s")
                               % {"field": field_label(field), "low": LIMIT_FLOORS[field], "high": hi}, field=field)
        raise InvalidInput(_("%(field)s must be between %(low)s and %(high)s")
                           % {"field": field_label(field), "low": lo, "high": hi}, field=field)
    return n


def parse_limit(value, *, field: str) -> int:
    """Parse a numeric VE parameter: sizes (``512M``) for byte fields, whole numbers otherwise.

    ``iolimit`` is bytes per second and takes sizes like ``10M`` (vzctl's --iolimit).
    """
    if field == "iolimit":
        return parse_size(value, field=field)
    return parse_int(value, field=field)


_RATE_RE = re.compile(r"^([0-9]{1,12})([KMG]?)(bit|bps|b)?$", re.IGNORECASE)


def parse_rate(value, *, field: str) -> int:
    """A bandwidth in bits/s: ``100M`` is 100 Mbit/s (decimal units, as tc counts), 0 = none."""
    if isinstance(value, bool):
        raise InvalidInput(_("%(field)s: expected a rate like 100M") % {"field": field_label(field)}, field=field)
    if isinstance(value, int):
        n = value
    else:
        m = _RATE_RE.match(str(value).strip())
        if not m:
            raise InvalidInput(_("%(field)s: %(text)r is not a rate (use e.g. 100M for 100 Mbit/s)")
                               % {"field": field_label(field), "text": str(value)[:40]}, field=field)
        n = int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2).upper()]
    if not 0 <= n <= 100 * 10**9 or 0 < n < 8000:
        raise InvalidInput(_("%(field)s must be 0 (unlimited) or between 8K and 100G bit/s")
                           % {"field": field_label(field)}, field=field)
    return n


def check_hostname(value) -> str:
    if not isinstance(value, str) or not HOSTNAME_RE.match(value):
        shown = value[:60] if isinstance(value, str) else type(value).__name__
        raise InvalidInput(
            _("hostname %(name)r is not valid: use letters, digits, hyphens and dots (RFC 1123), at most 253 "
              "characters") % {"name": shown}, field="hostname")
    return value.lower()


DEFAULTS = {
    "memory": 256 * MiB,
    "swap": 0,
    "disk": 1024 * MiB,
    "cpuunits": 1000,
    "cpulimit": 0,
    "numproc": 512,
    "iolimit": 0,
    "iopslimit": 0,
}
