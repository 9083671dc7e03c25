"""Errors a service raises for its caller to show: each carries a stable code and a
message written for the person who made the request.

Messages are translated where they are raised (``gettext`` with named %-placeholders), in
the language of the request being served: a Japanese session reads Japanese errors, while
workers and management commands, which activate no language, keep English."""
from django.utils.translation import gettext_lazy

# How a parameter is named inside a message. OpenVZ's parameter names (cpuunits, numproc)
# stay as they are: operators know them by those names.
FIELD_LABELS = {
    "memory": gettext_lazy("memory"), "swap": gettext_lazy("swap"), "disk": gettext_lazy("disk"),
    "hostname": gettext_lazy("hostname"), "addresses": gettext_lazy("addresses"),
    "bandwidth": gettext_lazy("bandwidth"), "description": gettext_lazy("description"),
    "reason": gettext_lazy("reason"), "name": gettext_lazy("name"), "network": gettext_lazy("network"),
    "range_start": gettext_lazy("range start"), "range_end": gettext_lazy("range end"),
    "template": gettext_lazy("template"), "plan": gettext_lazy("plan"), "email": gettext_lazy("e-mail address"),
}


def field_label(field: str) -> str:
    """The translated name of parameter ``field`` for a message (unknown ones as given)."""
    return str(FIELD_LABELS.get(field, field))


class ServiceError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class InvalidInput(ServiceError):
    code = "invalid"
    status = 400


class NotFound(ServiceError):
    code = "not-found"
    status = 404


class Conflict(ServiceError):
    """The object is busy or in a state that does not allow the action (HTTP 409)."""

    code = "conflict"
    status = 409


class Unavailable(ServiceError):
    code = "unavailable"
    status = 503


class Forbidden(ServiceError):
    """A member of the tenant whose role does not allow the action (HTTP 403). Someone who
    is not a member gets NotFound instead, so that the object's existence stays hidden."""

    code = "forbidden"
    status = 403


class QuotaExceeded(Conflict):
    """The change would take the tenant over one of its limits."""

    code = "quota-exceeded"

