"""LXD 5.0's `lxc launch` of the same busybox template, for comparison with Hako's
create+start (issue 3's anchor: 0.24–0.30 s on these machines).

    .venv/bin/python bench/lxd_compare.py [--runs N]

Needs Debian's `lxd` package and a running daemon initialised without networks (no bridge
is created: nothing on this machine's network changes):

    apt-get install -y lxd && lxd --group root --logfile /var/log/lxd/lxd.log &
    lxd waitready && printf 'networks: []\\nstorage_pools: [{name: default, driver: dir}]\\n
    profiles: [{name: default, devices: {root: {path: /, pool: default, type: disk}}}]\\n' | lxd init --preseed

The image is Hako's own busybox template (metadata.yaml + rootfs), imported once.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from containers.templates import build_busybox  # noqa: E402

ALIAS = "hako-busybox-bench"


def lxc(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["lxc", *argv], capture_output=True, text=True, check=check, timeout=120)


def import_image() -> None:
    if lxc("image", "info", ALIAS, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = build_busybox(Path(tmp) / "cache")
        root = Path(tmp) / "img"
        (root / "rootfs").mkdir(parents=True)
        subprocess.run(["tar", "-xpf", str(archive), "-C", str(root / "rootfs")], check=True)
        (root / "metadata.yaml").write_text(f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
                                            "properties: {description: Hako busybox, os: busybox}\n")
        out = Path(tmp) / "image.tar.gz"
        subprocess.run(["tar", "-czf", str(out), "-C", str(root), "metadata.yaml", "rootfs"], check=True)
        lxc("image", "import", str(out), "--alias", ALIAS)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    if subprocess.run(["lxc", "info"], capture_output=True).returncode != 0:
        print("LXD is not running: see this file's docstring", file=sys.stderr)
        return 2
    import_image()
    launch, delete = [], []
    for i in range(args.runs + 1):
        name = f"hakobench{i}"
        lxc("delete", "-f", name, check=False)
        t = time.perf_counter()
        lxc("launch", ALIAS, name)
        took = time.perf_counter() - t
        state = lxc("list", name, "-c", "s", "--format", "csv").stdout.strip()
        assert state == "RUNNING", state
        t = time.perf_counter()
        lxc("delete", "-f", name)
        if i:  # the first launch warms LXD's image cache
            launch.append(took)
            delete.append(time.perf_counter() - t)
    launch.sort(), delete.sort()
    p95 = lambda xs: xs[max(0, int(len(xs) * 0.95) - 1)]  # noqa: E731
    print(f"LXD {lxc('version').stdout.split()[-1]}: `lxc launch` busybox p50 {statistics.median(launch):.3f} s "
          f"p95 {p95(launch):.3f} s; `lxc delete -f` p50 {statistics.median(delete):.3f} s ({args.runs} runs, "
          "dir storage, no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
