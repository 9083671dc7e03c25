"""Authentication of the customer API (``/api/v1``): ``Authorization: Bearer hkp_<prefix>_<secret>``.

``request.user`` is the token's user (so panel.access and the services see a normal
member); ``request.auth`` is a :class:`CustomerAuth` with the token, its tenant and the
effective role (the token's cap, lowered to the user's current membership role). Billing
tokens (``hko_``) are not accepted here, nor customer tokens on the billing API.
"""
from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from panel.services.api_tokens import api_token_check
from panel.services.audit import audit_token_use

from .billing_auth import bearer_text


class CustomerAuth:
    def __init__(self, token, role):
        self.token = token
        self.tenant = token.tenant
        self.role = role


class PersonalTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        text = bearer_text(request)
        if text is None:
            return None
        found = api_token_check(text) if text else None
        if found is None:
            prefix = text[4:16] if text.startswith("hkp_") else ""
            audit_token_use(token_label=f"hkp_{prefix}" if prefix else "malformed", result="denied",
                            source="api", detail={"method": request.method, "path": request.path[:200]})
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token (expected 'Bearer hkp_...')")
        token, role = found
        audit_token_use(token_label=f"hkp_{token.prefix}", actor=token.user, tenant=token.tenant, source="api",
                        detail={"method": request.method, "path": request.path[:200], "role": role})
        return token.user, CustomerAuth(token, role)

    def authenticate_header(self, request):
        return 'Bearer realm="hako-api"'


class HasCustomerToken(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, CustomerAuth)


try:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class PersonalTokenScheme(OpenApiAuthenticationExtension):
        target_class = PersonalTokenAuthentication
        name = "personalToken"

        def get_security_definition(self, auto_schema):
            return {"type": "http", "scheme": "bearer", "bearerFormat": "hkp_<prefix>_<secret>"}
except ImportError:  # pragma: no cover
    pass
