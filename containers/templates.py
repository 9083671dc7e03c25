"""OS templates in the node's template cache.

A template travels and is cached as a tar archive (OpenVZ's ``/vz/template/cache``) next to
a small JSON metadata file that tells the runtime how to boot and halt it. Per-VE identity
(hostname, keys, passwords) is written at create, never baked into a template.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BUSYBOX_BINARY = "/bin/busybox"  # Debian's busybox-static: no shared libraries to copy

# {syslogd} and {crond} are the applets' paths in this busybox (--list-full): Debian's puts
# crond in /usr/sbin, and an inittab naming a missing program makes init respawn it in a
# busy loop (that once cost every busybox VE a share of a core).
BUSYBOX_INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/{syslogd} -n -O /var/log/messages
::respawn:/{crond} -f
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
    # systemd, Debian's default: measured here it reaches a listening sshd ~0.28 s after
    # lxc-start (as fast as a pruned sysvinit-core), runs 4 processes (systemd, journald,
    # a console getty, sshd) and stops cleanly in 0.6 s on SIGRTMIN+3. It needs the host's
    # cgroup v1 name=systemd hierarchy, which the agent mounts if missing (containers.tuning).
    "debian-12": {
        "description": "Debian 12 (bookworm) with systemd and OpenSSH",
        "halt_signal": "SIGRTMIN+3",
        "init": "/sbin/init",
        "suite": "bookworm",
        "packages": ["systemd-sysv", "openssh-server", "iproute2", "procps", "iputils-ping", "netbase",
                     "less", "vim-tiny"],
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


def boot_meta(cache: Path, name: str) -> dict:
    """How to boot and halt a VE of template ``name``: from the cache, or for a template
    removed from the cache after the VE was made, from the built-in table."""
    try:
        return template_meta(cache, name)
    except (TemplateError, ValueError):
        return BUILTIN.get(name, {})


def list_templates(cache: Path) -> list[str]:
    return sorted(p.stem for p in cache.glob("*.json") if (cache / f"{p.stem}.tar").exists())


def build_busybox(cache: Path) -> Path:
    """Build the busybox template into ``cache`` (idempotent; a few milliseconds)."""
    archive, meta = template_paths(cache, "busybox")
    build = _busybox_build_id()
    if archive.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()).get("build") == build:
                return archive
        except ValueError:
            pass  # a torn metadata file: rebuild
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
            "etc/inittab": BUSYBOX_INITTAB.format(**{a: _applet_path(applets, a) for a in ("syslogd", "crond")}),
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
    tmp_meta = meta.with_suffix(".json.new")
    tmp_meta.write_text(json.dumps({"name": "busybox", "build": build, **BUILTIN["busybox"]}, indent=1))
    os.replace(tmp_meta, meta)
    return archive


def _applet_path(applets: list[str], name: str) -> str:
    for path in applets:
        if path.rsplit("/", 1)[-1] == name:
            return path
    raise TemplateError(f"this busybox has no {name} applet")


def _busybox_build_id() -> str:
    """Changes whenever what build_busybox makes would change, so nodes rebuild it."""
    h = hashlib.sha256((BUSYBOX_INITTAB + BUSYBOX_RCS + json.dumps(BUILTIN["busybox"])).encode())
    try:
        st = os.stat(BUSYBOX_BINARY)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError:
        pass
    return h.hexdigest()[:16]


def ensure_builtin(cache: Path) -> list[str]:
    """Make sure the templates a node can build by itself are in its cache."""
    build_busybox(cache)
    return list_templates(cache)


# --- debian-12 (debootstrap) ---------------------------------------------------------

DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
BUILD_TIMEOUT = 1800  # s; debootstrap takes about a minute here, a slow mirror far longer

SSHD_HOSTKEYS = """\
# Written by Hako: the VE's host keys are made at create (ed25519 and ECDSA).
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
"""

# Units that cannot do anything useful in a container (no FITRIM on the VE's loop-backed
# disk, no LVM): masked so that they never leave the VE "degraded".
DEBIAN_MASKED_UNITS = ("fstrim.timer", "fstrim.service", "e2scrub_all.timer", "e2scrub_reap.service")

_PER_PACKAGE = re.compile(r"^I: (?:(Retrieving|Validating) \S+ \S+|(Extracting|Unpacking|Configuring) [^ ]+\.\.\.)$")


def _umount_below(path: Path) -> None:
    """Unmount whatever a killed debootstrap left mounted in its target (proc, sys)."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(prefix)]
    for mnt in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, cwd="/")


def _rmtree(path: Path) -> None:
    if path.exists():
        _umount_below(path)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, cwd="/")


def _debootstrap(root: Path, suite: str, packages: list[str], mirror: str, log) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", "--components=main",
            suite, str(root), mirror]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    for k in ("http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd="/", env=env, start_new_session=True)
    except FileNotFoundError:
        raise TemplateError("debootstrap is not installed on this node") from None
    deadline = time.monotonic() + BUILD_TIMEOUT
    last_phase, last_emit, count, tail = "", 0.0, 0, []
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = (tail + [line])[-5:]
            if time.monotonic() > deadline:
                raise TemplateError(f"debootstrap did not finish within {BUILD_TIMEOUT}s")
            # debootstrap prints a line per package per step: the job log gets every other
            # line (steps, warnings, errors), the first package line of each step, and one
            # package line every 5 s while a step runs.
            m = _PER_PACKAGE.match(line)
            phase = {"Validating": "Retrieving"}.get(m.group(1) or m.group(2), m.group(1) or m.group(2)) if m else ""
            count += 1
            now = time.monotonic()
            if not m or phase != last_phase or now - last_emit > 5:
                log(f"debootstrap: {line[3:] if line[:2] in ('I:', 'W:', 'E:') else line}")
                last_phase, last_emit = phase, now
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise
    if rc != 0:
        raise TemplateError(f"debootstrap failed (exit {rc}): {' | '.join(tail[-2:])[:400]}")


def _customize_debian(root: Path, mirror: str, suite: str) -> None:
    """Make the debootstrapped tree a template: no identity, container-ready, small."""
    ssh = root / "etc/ssh"
    for key in ssh.glob("ssh_host_*"):
        key.unlink()
    (ssh / "sshd_config.d").mkdir(exist_ok=True)
    (ssh / "sshd_config.d/hako-hostkeys.conf").write_text(SSHD_HOSTKEYS)
    (root / "etc/machine-id").write_text("")  # written per VE at create
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)  # debootstrap copied the build host's
    resolv.write_text("# Set by Hako from the VE's nameservers.\n")
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
        f"deb {DEBIAN_SECURITY} {suite}-security main\n")
    # pam_loginuid cannot write /proc/self/loginuid in an unprivileged container: a
    # "required" line would close every SSH session right after login.
    for pam in ("sshd", "login"):
        f = root / "etc/pam.d" / pam
        if f.exists():
            f.write_text(f.read_text().replace("required     pam_loginuid.so", "optional     pam_loginuid.so")
                         .replace("required\tpam_loginuid.so", "optional\tpam_loginuid.so"))
    units = root / "etc/systemd/system"
    for unit in DEBIAN_MASKED_UNITS:
        link = units / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    for wants in units.glob("*.wants"):
        for link in wants.iterdir():
            if link.name in DEBIAN_MASKED_UNITS:
                link.unlink()
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*",
                    "var/log/bootstrap.log", "var/cache/debconf/*-old"):
        for p in root.glob(pattern):
            if p.is_file():
                p.unlink()


def build_debian(cache: Path, name: str = "debian-12", log=lambda _: None,
                 mirror: str = "http://deb.debian.org/debian") -> Path:
    """Build a Debian template with debootstrap into ``cache`` (idempotent; about a minute
    with a good mirror). Progress lines go to ``log``."""
    archive, meta = template_paths(cache, name)
    if archive.exists() and meta.exists():
        return archive
    info = BUILTIN[name]
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache))
    t0 = time.monotonic()
    try:
        root = work / "rootfs"
        log(f"Building {name} with debootstrap ({info['suite']}, {mirror})")
        _debootstrap(root, info["suite"], info["packages"], mirror, log)
        _umount_below(root)
        _customize_debian(root, mirror, info["suite"])
        log("Packing the template archive")
        tmp_archive = work / f"{name}.tar"
        subprocess.run(["tar", "--numeric-owner", "-cpf", str(tmp_archive), "-C", str(root), "."],
                       check=True, capture_output=True, cwd="/")
        size = tmp_archive.stat().st_size
        tmp_meta = work / f"{name}.json"
        tmp_meta.write_text(json.dumps({"name": name, **info, "mirror": mirror, "built_at": time.time(),
                                        "size": size}, indent=1))
        os.replace(tmp_archive, archive)
        os.replace(tmp_meta, meta)
        log(f"OS template {name} built: {size // (1024 * 1024)}M in {time.monotonic() - t0:.0f}s")
    finally:
        _rmtree(work)
    return archive


def build_template(cache: Path, name: str, log=lambda _: None, mirror: str = "http://deb.debian.org/debian"
                   ) -> tuple[Path, bool]:
    """Build one of the built-in templates into ``cache``; returns (archive, built now)."""
    if name not in BUILTIN:
        raise TemplateError(f"this node cannot build an OS template named {name[:64]!r}; "
                            f"it builds: {', '.join(sorted(BUILTIN))}")
    archive, meta = template_paths(cache, name)
    if archive.exists() and meta.exists():
        return archive, False
    if name == "busybox":
        return build_busybox(cache), True
    return build_debian(cache, name, log, mirror), True


def remove_template(cache: Path, name: str) -> bool:
    """Delete a template from the cache; VEs made from it keep running and starting."""
    archive, meta = template_paths(cache, name)
    existed = archive.exists() or meta.exists()
    meta.unlink(missing_ok=True)  # first: list_templates stops showing it at once
    archive.unlink(missing_ok=True)
    return existed
