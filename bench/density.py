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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from containers import tuning  # noqa: E402
from containers.config import AgentConfig  # noqa: E402
from containers.messages import VESpec  # noqa: E402
from containers.runtime import Runtime  # noqa: E402
from containers.templates import ensure_builtin  # noqa: E402
from tests import harness  # noqa: E402

ROOT = harness.TEST_ROOT / "bench-density"
ID_BASE = 1_000_000 + 8_000 * 65536  # far from the tests' and the other benches' ranges; 7,000 VEs fit
TEMPLATE_CACHE = Path(os.environ.get("HAKO_TEST_TEMPLATE_CACHE", "/var/lib/hako-test/template-cache"))
RESERVE = 3 << 30  # never push the host below this much MemAvailable


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
    rt = Runtime(cfg)
    print(f"storage pool: {rt.pool.prepare()}")  # as the agent does: VE disks are reflink clones
    return rt


def spec(veid: int, template: str) -> VESpec:
    return VESpec(veid=veid, hostname=f"d{veid}", template=template, memory=256 << 20, swap=0,
                  disk=(1 << 30) if template == "busybox" else (2 << 30), cpuunits=1000, cpulimit=0,
                  numproc=512, uid_base=ID_BASE + (veid - 20000) * 65536)


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    return meminfo("MemAvailable")


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
    """Start n idle VEs one after another, then report how many really run and what each
    costs. Stops early at the first VE that fails to start: that is the node's limit."""
    base = 21000 if template == "busybox" else 26000  # id range index = veid - 20000 (< 7000)
    before = mem_available()
    t = time.perf_counter()
    started = 0
    try:
        for i in range(n):
            if mem_available() < RESERVE:
                print(f"  stopping at {i} VEs: MemAvailable under {RESERVE / 2**30:.0f} GiB, the reserve "
                      f"kept for the host", flush=True)
                break
            s = spec(base + i, template)
            try:
                rt.create(s, 1, lambda m: None)
                started += 1
                rt.start(s, 1, lambda m: None)
            except Exception as e:  # the node's limit, or a defect: either way, say which
                print(f"  VE {i + 1} of {n} failed to start after {time.perf_counter() - t:.0f} s: {e}",
                      flush=True)
                break
            if (i + 1) % 250 == 0:
                print(f"  {i + 1} {template} VEs started in {time.perf_counter() - t:.0f} s, "
                      f"MemAvailable {mem_available() / 2**30:.1f} GiB, page cache {meminfo('Cached') / 2**30:.1f} GiB, "
                      f"load {os.getloadavg()[0]:.0f}", flush=True)
        time.sleep(10 if template == "busybox" else 60)  # let them settle into idle
        took = time.perf_counter() - t
        running = [base + i for i in range(started) if rt.is_running(base + i)]
        charged = [int((rt.cgroup_path("memory", v) / "memory.usage_in_bytes").read_text()) for v in running]
        drop = before - mem_available()
        procs = sum(rt.nproc(v) or 0 for v in running)
        probe = [running[0], running[len(running) // 2], running[-1]] if running else []
        answers = [rt.exec(v, ["/bin/sh", "-c", "echo ok"], 30, lambda m: None) for v in probe]
        load = os.getloadavg()
        print(f"{template}: {len(running)} of {started} VEs running after {took:.0f} s; memory charged "
              f"per VE p50 {statistics.median(charged) / 2**20:.1f} MiB; host MemAvailable dropped "
              f"{drop / 2**20:.0f} MiB ({drop / max(1, len(running)) / 2**20:.1f} MiB per VE), "
              f"{mem_available() / 2**30:.1f} GiB left; {procs / max(1, len(running)):.1f} processes per VE; "
              f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; a command in the first, middle "
              f"and last VE: {[a.get('exit_code') for a in answers]}", flush=True)
    finally:
        t = time.perf_counter()

        def destroy(veid: int) -> None:
            try:
                rt.destroy(veid, lambda m: None)
            except Exception as e:
                print(f"  destroy of {veid} failed: {e}", flush=True)

        # In parallel, as an agent's worker processes would: each destroy mostly waits on
        # lxc-stop and umount, and thousands one after another would take most of an hour.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(destroy, range(base, base + started)))
        print(f"  destroyed {started} in {time.perf_counter() - t:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busybox", type=int, default=200)
    ap.add_argument("--debian", type=int, default=0)
    ap.add_argument("--overhead-reps", type=int, default=7)
    ap.add_argument("--loop", type=int, default=3_000_000,
                    help="iterations of the CPU-bound loop (~6 s: long enough that start-up costs vanish)")
    args = ap.parse_args()
    common.interrupt_on_signals()  # a SIGTERM must still destroy the VEs started so far
    harness.clean_node_root(ROOT)
    print(f"machine: nproc {os.cpu_count()}, kernel {os.uname().release}, "
          f"MemAvailable {mem_available() / 2**30:.1f} GiB")
    values, problems = tuning.raise_limits()  # as the node agent does before taking work
    print(f"tuning: {values}" + (f" problems: {problems}" if problems else ""))
    try:
        rt = runtime()
        if args.overhead_reps:
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
