"""OS templates in the node's template cache.

A template travels and is cached as a tar archive (OpenVZ's ``/vz/template/cache``) next to
a small JSON metadata file that tells the runtime how to boot and halt it. Per-VE identity
(hostname, keys, passwords) is written at create, never baked into a template.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX_BINARY = "/bin/busybox"  # Debian's busybox-static: no shared libraries to copy

BUSYBOX_INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/sbin/syslogd -n -O /var/log/messages
::respawn:/sbin/crond -f
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
"""

BUSYBOX_RCS = """\
#!/bin/sh
# Hako busybox VE boot script.
[ -s /etc/hostname ] && hostname -F /etc/hostname
mkdir -p /var/log /var/run /tmp /var/spool/cron/crontabs
"""

BUILTIN = {
    "busybox": {
        "description": "BusyBox userland with init, syslogd and crond (for tests and tiny VEs)",
        "halt_signal": "SIGUSR2",  # busybox init powers off on SIGUSR2
        "init": "/sbin/init",
    },
}


class TemplateError(RuntimeError):
    pass


def template_paths(cache: Path, name: str) -> tuple[Path, Path]:
    return cache / f"{name}.tar", cache / f"{name}.json"


def template_meta(cache: Path, name: str) -> dict:
    archive, meta = template_paths(cache, name)
    if not archive.exists() or not meta.exists():
        raise TemplateError(f"OS template {name!r} is not in this node's template cache")
    return json.loads(meta.read_text())


def list_templates(cache: Path) -> list[str]:
    return sorted(p.stem for p in cache.glob("*.json") if (cache / f"{p.stem}.tar").exists())


def build_busybox(cache: Path) -> Path:
    """Build the busybox template into ``cache`` (idempotent; a few milliseconds)."""
    archive, meta = template_paths(cache, "busybox")
    if archive.exists() and meta.exists():
        return archive
    if not os.path.exists(BUSYBOX_BINARY):
        raise TemplateError("busybox-static is not installed on this node (/bin/busybox)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "rootfs"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "tmp",
                  "root", "run", "var/log", "var/run", "var/spool/cron/crontabs", "home", "mnt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        os.chmod(root / "root", 0o700)
        shutil.copy2(BUSYBOX_BINARY, root / "bin/busybox")
        applets = subprocess.run([BUSYBOX_BINARY, "--list-full"], check=True, capture_output=True,
                                 text=True).stdout.split()
        for applet in applets:
            if applet == "bin/busybox" or "/" not in applet:
                continue
            link = root / applet
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists() and not link.is_symlink():
                link.symlink_to("/bin/busybox")
        files = {
            "etc/inittab": BUSYBOX_INITTAB,
            "etc/init.d/rcS": BUSYBOX_RCS,
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/shadow": "root:*:19000:0:99999:7:::\n",
            "etc/hostname": "localhost\n",
            "etc/hosts": "127.0.0.1 localhost\n",
            "etc/profile": "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n",
        }
        for rel, text in files.items():
            (root / rel).write_text(text)
        os.chmod(root / "etc/init.d/rcS", 0o755)
        os.chmod(root / "etc/shadow", 0o600)
        tmp_archive = Path(tmp) / "busybox.tar"
        subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-cpf", str(tmp_archive),
                        "-C", str(root), "."], check=True)
        os.replace(tmp_archive, archive)
    meta.write_text(json.dumps({"name": "busybox", **BUILTIN["busybox"]}, indent=1))
    return archive


def ensure_builtin(cache: Path) -> list[str]:
    """Make sure the templates a node can build by itself are in its cache."""
    build_busybox(cache)
    return list_templates(cache)
