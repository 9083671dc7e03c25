"""``billing_token``: make a token for a billing system (the local admin).

    manage.py billing_token create ACCOUNT [--scopes catalog:read,services:write ...] [--expires-days N]

The billing account ACCOUNT is made if it does not exist. The token is printed once and
stored only as its SHA-256: copy it into the billing system now.
"""
from django.core.management.base import BaseCommand, CommandError

from panel.services import billing as svc
from panel.services.errors import ServiceError

from ._cli import cli_source


class Command(BaseCommand):
    help = "Create API tokens for billing systems (/api/billing/v1)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        p = sub.add_parser("create", help="create a token (printed once)")
        p.add_argument("account", help="billing account name (made if missing)")
        p.add_argument("--scopes", nargs="+", default=None,
                       help=f"among {', '.join(svc.SCOPES)} (space or comma separated; default all)")
        p.add_argument("--expires-days", type=int, default=None, dest="expires_days")

    def handle(self, *args, action, account, scopes=None, expires_days=None, **o):
        if scopes is not None:
            scopes = [s for part in scopes for s in part.split(",") if s]
        try:
            the_account = svc.billing_account_get_or_create(name=account)
            token, text = svc.billing_token_create(account=the_account, scopes=scopes, expires_days=expires_days,
                                                   source=cli_source())
        except ServiceError as e:
            raise CommandError(e.message) from None
        expires = token.expires_at.strftime("%Y-%m-%d %H:%M UTC") if token.expires_at else "never"
        self.stderr.write(f"Token for billing account {the_account.name} (scopes: {', '.join(token.scopes)}; "
                          f"expires: {expires}). It is shown only now:")
        self.stdout.write(text)
