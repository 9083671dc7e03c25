"""Density and CPU overhead of VEs on this node (issue 3's figures).

    .venv/bin/python bench/density.py [--busybox N] [--debian N] [--overhead-reps N]

(root, after scripts/setup-host.sh; --debian needs the debian-12 template in the test
template cache, which the test suite builds.)

* CPU overhead: the same CPU-bound program (busybox sh counting in a loop: the same static
  binary on both sides) timed on the host and inside a running VE; median of the runs.
* Density: N idle VEs started one after another on one node through the node's runtime;
  reports the memory each costs (the VEs' own memory cgroups, and the drop of the host's
  MemAvailable per VE) and how long the batch took. Everything is destroyed at the end.

Runs in its own node root under the test root and its own id ranges; it never touches a
test session's VEs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from containers.config import AgentConfig  # noqa: E402
from containers.messages import VESpec  # noqa: E402
from containers.runtime import Runtime  # noqa: E402
from containers.templates import ensure_builtin  # noqa: E402
from tests import harness  # noqa: E402

ROOT = harness.TEST_ROOT / "bench-density"
ID_BASE = 1_000_000 + 9_000 * 65536  # far from the tests' and the other benches' ranges
TEMPLATE_CACHE = Path(os.environ.get("HAKO_TEST_TEMPLATE_CACHE", "/var/lib/hako-test/template-cache"))
def loop(n: int) -> str:
    return f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"


def runtime() -> Runtime:
    cfg = AgentConfig(node="hakodensity", key=b"\0" * 32, broker_url="redis://", root=ROOT,
                      heartbeat_interval=2, concurrency=1, stop_timeout=10, fault_delay="")
    cfg.ensure_dirs()
    ensure_builtin(cfg.templates)
    for name in ("debian-12.tar", "debian-12.json"):
        src, dst = TEMPLATE_CACHE / name, cfg.templates / name
        if src.exists() and not dst.exists():
            os.link(src, dst)
    return Runtime(cfg)


def spec(veid: int, template: str) -> VESpec:
    return VESpec(veid=veid, hostname=f"d{veid}", template=template, memory=256 << 20, swap=0,
                  disk=(1 << 30) if template == "busybox" else (2 << 30), cpuunits=1000, cpulimit=0,
                  numproc=512, uid_base=ID_BASE + (veid - 20000) * 65536)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t


def overhead(rt: Runtime, reps: int, iterations: int) -> None:
    s = spec(20000, "busybox")
    rt.create(s, 1, lambda m: None)
    rt.start(s, 1, lambda m: None)
    inside = rt.lxc("attach", s.veid, "--", "/bin/busybox", "sh", "-c", loop(iterations))
    outside = ["/bin/busybox", "sh", "-c", loop(iterations)]
    timed(inside), timed(outside)  # warm up
    host, ve = [], []
    for _ in range(reps):  # interleaved, so that load drifts hit both sides alike
        host.append(timed(outside))
        ve.append(timed(inside))
    h, v = statistics.median(host), statistics.median(ve)
    # lxc-attach itself costs a few ms per run: measure it with a no-op and take it out.
    attach = statistics.median(timed(rt.lxc("attach", s.veid, "--", "/bin/true")) for _ in range(reps))
    print(f"CPU-bound loop: host {h:.3f} s, inside a VE {v:.3f} s (attach {attach * 1000:.1f} ms "
          f"subtracted: {v - attach:.3f} s), overhead {((v - attach) / h - 1) * 100:+.2f} %  (target <= 1 %)")
    rt.destroy(s.veid, lambda m: None)


def density(rt: Runtime, template: str, n: int) -> None:
    base = 21000 if template == "busybox" else 23000  # id range index = veid - 20000 (< 5000)
    before = mem_available()
    t = time.perf_counter()
    started = 0
    try:
        for i in range(n):
            s = spec(base + i, template)
            rt.create(s, 1, lambda m: None)
            rt.start(s, 1, lambda m: None)
            started += 1
        time.sleep(10 if template == "busybox" else 30)  # let them settle into idle
        took = time.perf_counter() - t
        charged = [int((rt.cgroup_path("memory", base + i) / "memory.usage_in_bytes").read_text())
                   for i in range(started)]
        drop = before - mem_available()
        procs = sum(rt.nproc(base + i) or 0 for i in range(started))
        print(f"{template}: {started} idle VEs running, started in {took:.1f} s; "
              f"memory charged per VE p50 {statistics.median(charged) / 2**20:.1f} MiB; host MemAvailable "
              f"dropped {drop / 2**20:.0f} MiB ({drop / started / 2**20:.1f} MiB per VE); "
              f"{procs / started:.1f} processes per VE")
        print(f"  extrapolated to this node's {mem_available() / 2**30:.1f} GiB still available: "
              f"about {int(started + mem_available() / max(1, drop / started))} {template} VEs")
    finally:
        for i in range(started):
            rt.destroy(base + i, lambda m: None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busybox", type=int, default=200)
    ap.add_argument("--debian", type=int, default=0)
    ap.add_argument("--overhead-reps", type=int, default=7)
    ap.add_argument("--loop", type=int, default=3_000_000,
                    help="iterations of the CPU-bound loop (~6 s: long enough that start-up costs vanish)")
    args = ap.parse_args()
    harness.clean_node_root(ROOT)
    print(f"machine: nproc {os.cpu_count()}, kernel {os.uname().release}, "
          f"MemAvailable {mem_available() / 2**30:.1f} GiB")
    try:
        rt = runtime()
        overhead(rt, args.overhead_reps, args.loop)
        if args.busybox:
            density(rt, "busybox", args.busybox)
        if args.debian:
            density(rt, "debian-12", args.debian)
    finally:
        harness.clean_node_root(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
