"""``quota``: tenant limits and quota requests from the command line (the local admin).

    manage.py quota show acme
    manage.py quota set acme --memory 16G --max-ves 10 --disk unlimited
    manage.py quota requests [--all]
    manage.py quota approve REQUEST_ID [--memory 8G ...] [--reason TEXT]
    manage.py quota deny REQUEST_ID --reason TEXT
"""
from django.core.management.base import BaseCommand, CommandError

from panel.models import QuotaRequest, Tenant
from panel.services import quotas
from panel.services.errors import ServiceError

from ._cli import cli_source

LIMIT_OPTIONS = (("--max-ves", "max_ves"), ("--memory", "memory"), ("--disk", "disk"),
                 ("--cpuunits", "cpuunits"), ("--addresses", "addresses"), ("--backups", "backups"))


def _limits(p):
    for opt, dest in LIMIT_OPTIONS:
        p.add_argument(opt, dest=dest, help="a number, a size like 8G, or 'unlimited'")


class Command(BaseCommand):
    help = "Show and set tenant quotas; list, approve and deny quota requests."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("show").add_argument("tenant")
        st = sub.add_parser("set")
        st.add_argument("tenant")
        _limits(st)
        rq = sub.add_parser("requests")
        rq.add_argument("--all", action="store_true", help="decided ones too")
        ap = sub.add_parser("approve")
        ap.add_argument("request")
        ap.add_argument("--reason", default="")
        _limits(ap)
        dn = sub.add_parser("deny")
        dn.add_argument("request")
        dn.add_argument("--reason", required=True)

    def handle(self, *args, action, **o):
        try:
            getattr(self, f"do_{action}")(o)
        except ServiceError as e:
            raise CommandError(e.message) from None

    @staticmethod
    def tenant(slug) -> Tenant:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"tenant {slug!r} does not exist")
        return tenant

    @staticmethod
    def request(pk) -> QuotaRequest:
        req = QuotaRequest.objects.filter(pk=pk).first() if len(pk) == 36 else None
        if req is None:
            raise CommandError(f"quota request {pk[:40]!r} does not exist")
        return req

    @staticmethod
    def given(o) -> dict:
        return {dest: o[dest] for _, dest in LIMIT_OPTIONS if o.get(dest) is not None}

    def do_show(self, o):
        for row in quotas.quota_overview(self.tenant(o["tenant"])):
            pct = f"  {row['percent']}%" if row["percent"] is not None else ""
            self.stdout.write(f"{row['label']:<10} {row['used_text']} / {row['limit_text']}{pct}")

    def do_set(self, o):
        limits = self.given(o)
        if not limits:
            raise CommandError("give at least one limit, e.g. --memory 16G")
        quotas.quota_set(tenant=self.tenant(o["tenant"]), source=cli_source(), **limits)
        self.do_show(o)

    def do_requests(self, o):
        qs = QuotaRequest.objects.select_related("tenant", "requester").order_by("created_at")
        if not o["all"]:
            qs = qs.filter(state=QuotaRequest.State.PENDING)
        for r in qs:
            asked = ", ".join(f"{quotas.LABELS[f]} {quotas.show(f, v)}" for f, v in r.amounts.items())
            who = r.requester.username if r.requester else "-"
            self.stdout.write(f"{r.pk} {r.state:<10} {r.tenant.slug:<16} {who:<16} {asked}")

    def do_approve(self, o):
        amounts = self.given(o) or None
        req = quotas.quota_request_approve(request=self.request(o["request"]), actor=None, amounts=amounts,
                                           reason=o["reason"], source=cli_source())
        self.stdout.write(f"quota request {req.pk} approved")

    def do_deny(self, o):
        req = quotas.quota_request_deny(request=self.request(o["request"]), actor=None, reason=o["reason"],
                                        source=cli_source())
        self.stdout.write(f"quota request {req.pk} denied")
