"""``api_token``: personal API tokens of customers for ``/api/v1`` (the local admin).

    manage.py api_token create USER TENANT [--role viewer|operator|owner] [--name TEXT] [--expires-days N]
    manage.py api_token revoke PREFIX

USER is a username, TENANT a tenant slug; the role defaults to the user's role there and
cannot exceed it. The token is printed once and stored only as its SHA-256.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from panel.models import PersonalToken, Tenant
from panel.services import api_tokens as svc
from panel.services.errors import ServiceError

from ._cli import cli_source


class Command(BaseCommand):
    help = "Create or revoke customers' personal API tokens (/api/v1)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        p = sub.add_parser("create", help="create a token (printed once)")
        p.add_argument("user", help="username")
        p.add_argument("tenant", help="tenant slug")
        p.add_argument("--role", choices=svc.ROLES, default=None, help="cap (default: the user's role)")
        p.add_argument("--name", default="")
        p.add_argument("--expires-days", type=int, default=None, dest="expires_days")
        r = sub.add_parser("revoke", help="revoke a token by its prefix")
        r.add_argument("prefix")

    def handle(self, *args, action, **o):
        try:
            if action == "revoke":
                token = PersonalToken.objects.filter(prefix=o["prefix"].removeprefix("hkp_")).first()
                if token is None:
                    raise CommandError(f"no token with prefix {o['prefix']!r}")
                svc.api_token_revoke(token=token, source=cli_source())
                self.stdout.write(f"revoked hkp_{token.prefix}")
                return
            user = get_user_model().objects.filter(username=o["user"]).first()
            if user is None:
                raise CommandError(f"no user {o['user']!r}")
            tenant = Tenant.objects.filter(slug=o["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {o['tenant']!r}")
            token, text = svc.api_token_create(user=user, tenant=tenant, role=o["role"], name=o["name"],
                                               expires_days=o["expires_days"], source=cli_source())
        except ServiceError as e:
            raise CommandError(e.message) from None
        expires = token.expires_at.strftime("%Y-%m-%d %H:%M UTC") if token.expires_at else "never"
        self.stderr.write(f"Token for {user.get_username()} in {tenant.slug} (role: {token.role}; expires: "
                          f"{expires}). It is shown only now:")
        self.stdout.write(text)
