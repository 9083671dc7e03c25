"""``vzlist``: OpenVZ's VE listing, from the panel's database (never waits on a node)."""
from django.core.management.base import BaseCommand, CommandError

from panel.models import VE
from panel.services.validation import human_size

# field -> (header, width (negative: left-aligned), getter)
FIELDS = {
    "veid": ("VEID", 10, lambda v: v.veid),
    "ctid": ("CTID", 10, lambda v: v.veid),
    "nproc": ("NPROC", 10, lambda v: v.nproc if v.state == "running" and v.nproc is not None else "-"),
    "status": ("STATUS", -9, lambda v: v.state),
    "ip": ("IP_ADDR", -15, lambda v: " ".join(v.addresses) if v.addresses else "-"),
    "hostname": ("HOSTNAME", -20, lambda v: v.hostname or "-"),
    "ostemplate": ("OSTEMPLATE", -12, lambda v: v.template.name),
    "node": ("NODE", -12, lambda v: v.node.name),
    "tenant": ("TENANT", -12, lambda v: v.tenant.slug),
    "ram": ("RAM", 8, lambda v: human_size(v.memory)),
    "swap": ("SWAP", 8, lambda v: human_size(v.swap)),
    "diskspace": ("DISKSPACE", 10, lambda v: human_size(v.disk)),
    "cpuunits": ("CPUUNITS", 9, lambda v: v.cpuunits),
    "cpulimit": ("CPULIM", 7, lambda v: v.cpulimit),
    "numproc": ("NUMPROC", 8, lambda v: v.numproc),
    "onboot": ("ONBOOT", -6, lambda v: "yes" if v.onboot else "no"),
    "netin": ("NETIN", 12, lambda v: v.traffic.get("in_bytes", "-")),
    "netout": ("NETOUT", 12, lambda v: v.traffic.get("out_bytes", "-")),
    "nameserver": ("NAMESERVER", -16, lambda v: " ".join(v.nameservers) or "-"),
}
DEFAULT = "veid,nproc,status,ip,hostname"


def format_row(values, widths) -> str:
    cells = []
    for value, width in zip(values, widths):
        text = str(value)
        cells.append(text.rjust(width) if width > 0 else text.ljust(-width))
    return " ".join(cells).rstrip()


class Command(BaseCommand):
    help = "List VEs as OpenVZ's vzlist does: running ones, or all with -a."

    def add_arguments(self, parser):
        parser.add_argument("-a", "--all", dest="show_all", action="store_true", help="also list stopped VEs")
        parser.add_argument("-o", "--output", default=DEFAULT, help=f"fields: {','.join(FIELDS)}")
        parser.add_argument("-H", "--no-header", action="store_true")
        parser.add_argument("--tenant", default=None)
        parser.add_argument("veids", nargs="*")

    def handle(self, *args, show_all, output, no_header, tenant, veids, **o):
        names = [f.strip() for f in output.split(",") if f.strip()]
        bad = [n for n in names if n not in FIELDS]
        if bad or not names:
            raise CommandError(f"unknown field(s) {', '.join(bad) or '(none)'}; known: {', '.join(FIELDS)}")
        qs = VE.objects.exclude(state=VE.State.DESTROYED).select_related("template", "node", "tenant").order_by("veid")
        if not show_all:
            qs = qs.filter(state=VE.State.RUNNING)
        if tenant:
            qs = qs.filter(tenant__slug=tenant)
        if veids:
            if any(not v.isdigit() for v in veids):
                raise CommandError("VEIDs are numbers")
            qs = qs.filter(veid__in=[int(v) for v in veids])
        cols = [FIELDS[n] for n in names]
        widths = [c[1] for c in cols]
        if not no_header:
            self.stdout.write(format_row([c[0] for c in cols], widths))
        for ve in qs:
            self.stdout.write(format_row([c[2](ve) for c in cols], widths))
