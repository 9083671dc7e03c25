"""Errors a service raises for its caller to show: each carries a stable code and a
message written for the person who made the request."""


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

