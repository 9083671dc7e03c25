"""``vzctl``: OpenVZ's VE control command on Hako's services, waiting for each job.

    manage.py vzctl create 101 --ostemplate busybox --hostname web1 --ram 256M --diskspace 1G
    manage.py vzctl start 101
    manage.py vzctl set 101 --ram 512M --cpulimit 50
    manage.py vzctl exec 101 ps
    manage.py vzctl enter 101       (a root shell in this terminal; vzctl console 101: the VE's tty)
    manage.py vzctl stop 101
    manage.py vzctl destroy 101
    manage.py vzctl migrate 101 node2 [--bwlimit KBPS]

A job that fails prints its reason and exits non-zero. Bare numbers for --diskspace are
KiB, for --iolimit MB/s and for --ram/--swap bytes, as vzctl reads them; suffixes K, M, G, T
work everywhere.
"""
import argparse
import sys

from django.core.management.base import BaseCommand, CommandError

from panel.models import Job, Node, Tenant
from panel.services import network as net
from panel.services import ves as svc
from panel.services.errors import ServiceError
from panel.services.jobs import job_wait
from panel.services.validation import parse_size

from ._cli import cli_source, ve_by_veid


def _yesno(v: str) -> bool:
    if v not in ("yes", "no"):
        raise argparse.ArgumentTypeError("use yes or no")
    return v == "yes"


def _resources(p):
    p.add_argument("--ram", help="memory, e.g. 512M")
    p.add_argument("--swap", help="swap, e.g. 1G")
    p.add_argument("--diskspace", help="disk size, e.g. 10G (bare numbers are KiB)")
    p.add_argument("--cpuunits", help="CPU weight (OpenVZ default 1000)")
    p.add_argument("--cpulimit", help="CPU cap in percent of one CPU (100 = one core, 0 = none)")
    p.add_argument("--numproc", help="maximum number of processes")
    p.add_argument("--iolimit", help="disk bandwidth limit per second, reads and writes each, "
                   "e.g. 10M (bare numbers are MB/s as in OpenVZ; 0 = none)")
    p.add_argument("--iopslimit", help="disk operations per second, reads and writes each (0 = none)")
    p.add_argument("--hostname")
    p.add_argument("--onboot", type=_yesno, help="start when the node agent starts: yes|no")
    p.add_argument("--ipadd", action="append", metavar="ADDR",
                   help="add an address (repeatable); 'auto' takes a free one from the node's pools")
    p.add_argument("--nameserver", action="append", metavar="ADDR", help="DNS server for the VE (repeatable)")
    p.add_argument("--searchdomain", help="DNS search domains, space separated")
    p.add_argument("--ratein", help="bandwidth limit to the VE, bits/s (e.g. 100M; 0 = none)")
    p.add_argument("--rateout", help="bandwidth limit from the VE, bits/s (e.g. 100M; 0 = none)")


class Command(BaseCommand):
    help = "Control VEs the way OpenVZ's vzctl does."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        c = sub.add_parser("create")
        c.add_argument("veid")
        c.add_argument("--ostemplate", required=True)
        c.add_argument("--tenant", default=None, help="tenant slug (default: the 'default' tenant)")
        c.add_argument("--node", default=None)
        c.add_argument("--plan", default=None, help="plan name: its values are the defaults (see manage.py plan list)")
        _resources(c)
        for name in ("start", "restart", "destroy", "status"):
            sub.add_parser(name).add_argument("veid")
        s = sub.add_parser("stop")
        s.add_argument("veid")
        s.add_argument("--fast", action="store_true", help="kill at once instead of a clean shutdown")
        s.add_argument("--timeout", type=int, default=None)
        st = sub.add_parser("set")
        st.add_argument("veid")
        _resources(st)
        st.add_argument("--save", action="store_true", help="accepted for compatibility: changes are always saved")
        st.add_argument("--ipdel", action="append", metavar="ADDR", help="remove an address (repeatable; 'all')")
        st.add_argument("--userpasswd", metavar="root:PASSWORD",
                        help="set the root password (as vzctl; the command line shows it to 'ps' on this "
                             "host while it runs, the VE page does not)")
        e = sub.add_parser("exec")
        e.add_argument("veid")
        e.add_argument("--timeout", type=int, default=60)
        e.add_argument("command", nargs=argparse.REMAINDER)
        for name in ("enter", "console"):  # a root shell / the VE's own tty, in this terminal
            sub.add_parser(name).add_argument("veid")
        mg = sub.add_parser("migrate", help="move the VE to another node (running: pre-copy, short restart)")
        mg.add_argument("veid")
        mg.add_argument("node", help="the target node's name")
        mg.add_argument("--bwlimit", type=int, default=0, help="cap the copy at this many KiB/s (0 = none)")

    def handle(self, *args, action, veid, **o):
        try:
            self.dispatch(action, veid, o)
        except ServiceError as e:
            raise CommandError(e.message) from None

    def dispatch(self, action, veid, o):
        source = cli_source()
        if action == "create":
            tenant = Tenant.objects.filter(slug=o["tenant"] or "default").first()
            if tenant is None:
                raise CommandError(f"tenant {o['tenant'] or 'default'!r} does not exist")
            node = None
            if o["node"]:
                node = Node.objects.filter(name=o["node"]).first()
                if node is None:
                    raise CommandError(f"node {o['node']!r} does not exist")
            ipadd = o["ipadd"]
            addresses = None if ipadd is None or ipadd == ["auto"] else ipadd
            job = svc.ve_create(tenant=tenant, template=o["ostemplate"], veid=veid, node=node,
                                hostname=o["hostname"], onboot=bool(o["onboot"]), source=source,
                                addresses=addresses, plan=o["plan"], **self.sizes(o), **self.network(o))
            self.stdout.write(f"Creating VE private area (VE {job.ve.veid} on node {job.node.name})")
            return self.follow(job, done=f"VE {job.ve.veid} is created")
        ve = ve_by_veid(veid)
        if action == "status":
            job = self.follow(svc.ve_status(ve=ve, source=source), quiet=True)
            state = job.result.get("state")
            words = {"running": "exist mounted running", "stopped": "exist unmounted down",
                     "absent": "deleted unmounted down"}.get(state, state)
            self.stdout.write(f"VEID {ve.veid} {words}")
            return
        if action == "start":
            return self.follow(svc.ve_start(ve=ve, source=source))
        if action == "stop":
            return self.follow(svc.ve_stop(ve=ve, source=source, kill=o["fast"], timeout=o["timeout"]))
        if action == "restart":
            self.stdout.write("Restarting VE")
            return self.follow(svc.ve_restart(ve=ve, source=source))
        if action == "destroy":
            return self.follow(svc.ve_destroy(ve=ve, source=source))
        if action == "set":
            changes = self.sizes(o)
            if o["hostname"] is not None:
                changes["hostname"] = o["hostname"]
            if o["onboot"] is not None:
                changes["onboot"] = o["onboot"]
            changes.update(self.network(o))
            if o["ipdel"]:
                self.follow(net.ve_ipdel(ve=ve, addresses=o["ipdel"], source=source))
                ve.refresh_from_db()
            if o["ipadd"]:
                auto = o["ipadd"] == ["auto"]
                self.follow(net.ve_ipadd(ve=ve, addresses=None if auto else o["ipadd"], source=source))
                ve.refresh_from_db()
            if o["userpasswd"] is not None:
                user, sep, password = o["userpasswd"].partition(":")
                if user != "root" or not sep:
                    raise CommandError("--userpasswd takes root:PASSWORD (only root's password can be set)")
                self.follow(svc.ve_set_password(ve=ve, root_password=password, source=source))
            if changes or not (o["ipdel"] or o["ipadd"] or o["userpasswd"] is not None):
                self.follow(svc.ve_set(ve=ve, source=source, **changes))
            return
        if action == "exec":
            argv = o["command"]
            if argv and argv[0] == "--":
                argv = argv[1:]
            if not argv:
                raise CommandError("give the command to run, e.g. vzctl exec 101 ps")
            job = self.follow(svc.ve_exec(ve=ve, argv=argv, timeout=o["timeout"], source=source), quiet=True)
            self.stdout.write(job.result.get("output", ""), ending="")
            if job.result.get("truncated"):
                self.stderr.write("(output truncated at 64 KiB)")
            if job.result.get("timed_out"):
                raise CommandError(f"command timed out after {o['timeout']}s")
            code = job.result.get("exit_code") or 0
            if code:
                sys.exit(code)
            return
        if action == "migrate":
            from panel.services.migrations import STEP_TIMEOUT, ve_migrate

            from ._cli import follow_job

            self.stdout.write(f"Starting migration of VE {ve.veid} from {ve.node.name} to {o['node']}")
            job = ve_migrate(ve=ve, target=o["node"], bwlimit=o["bwlimit"], source=source)
            job = follow_job(self, job, timeout=STEP_TIMEOUT)
            downtime = (job.result or {}).get("downtime_ms")
            self.stdout.write(f"VE {ve.veid} migrated to {o['node']}"
                              + (f" (downtime {downtime / 1000:.2f} s)" if downtime is not None else ""))
            return
        if action in ("enter", "console"):
            from panel.console_cli import run_terminal

            if action == "enter":
                self.stderr.write(f"entered into VE {ve.veid}")
            code = run_terminal(ve=ve, kind="shell" if action == "enter" else "tty", source=source)
            if action == "enter":
                self.stderr.write(f"exited from VE {ve.veid}")
            if code:
                sys.exit(code)
            return
        raise CommandError(f"unknown action {action}")

    @staticmethod
    def network(o) -> dict:
        out = {}
        if o.get("nameserver"):
            out["nameservers"] = o["nameserver"]
        for opt, field in (("searchdomain", "searchdomain"), ("ratein", "rate_in"), ("rateout", "rate_out")):
            if o.get(opt) is not None:
                out[field] = o[opt]
        return out

    @staticmethod
    def sizes(o) -> dict:
        out = {}
        if o.get("ram") is not None:
            out["memory"] = parse_size(o["ram"], field="memory")
        if o.get("swap") is not None:
            out["swap"] = parse_size(o["swap"], field="swap")
        if o.get("diskspace") is not None:
            out["disk"] = parse_size(o["diskspace"], field="disk", default_unit="K")
        if o.get("iolimit") is not None:
            out["iolimit"] = parse_size(o["iolimit"], field="iolimit", default_unit="M")
        for opt in ("cpuunits", "cpulimit", "numproc", "iopslimit"):
            if o.get(opt) is not None:
                out[opt] = o[opt]
        return out

    def follow(self, job: Job, *, quiet: bool = False, done: str | None = None) -> Job:
        def show(line):
            if not quiet and line.kind != "error" and line.message and line.message != "Task OK":
                self.stdout.write(line.message)

        job = job_wait(job, on_log=show, timeout=600)
        if job.state == Job.State.SUCCEEDED:
            if done and not quiet:
                self.stdout.write(done)
            return job
        if not job.is_terminal:
            raise CommandError(f"job {job.id} is still {job.state} after 600s; follow it in the panel")
        raise CommandError(job.explanation or f"job {job.kind} {job.state}")
