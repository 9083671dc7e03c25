"""Per-VE identity, written into a new VE's mounted tree at create (never baked into a
template): SSH host keys, /etc/machine-id, the root password hash and authorized keys.

The tree belongs to the VE (files stay unshifted on disk: uid 0 here is the VE's root), so
every write refuses to follow a symlink and every directory is checked to be a directory.
At create the tree is a fresh copy of a template, but the same code may one day run on a
tree the VE's root has touched.
"""
from __future__ import annotations

import datetime
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

# ed25519 and ECDSA keys take ~5 ms each to make; an RSA-3072 key takes 0.3-1 s, which
# would be most of a debian VE's provisioning time. Every OpenSSH client of the last decade
# speaks ed25519; a customer who needs RSA can add one with ssh-keygen inside the VE.
HOST_KEY_TYPES = ("ed25519", "ecdsa")


class IdentityError(RuntimeError):
    pass


def _dir(root: Path, rel: str, mode: int | None = None, create: bool = False) -> Path:
    """``root/rel`` as a real directory (no symlink anywhere below root)."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            raise IdentityError(f"/{rel} in the VE is a symbolic link")
        if not path.exists():
            if not create:
                raise IdentityError(f"/{rel} does not exist in the VE")
            path.mkdir(mode=mode or 0o755)
            os.chown(path, 0, 0)
        elif not path.is_dir():
            raise IdentityError(f"/{rel} in the VE is not a directory")
    if mode is not None:
        os.chmod(path, mode)
    return path


def write_file(path: Path, data: bytes | str, mode: int) -> None:
    """Replace ``path`` with ``data`` owned by (VE) root, never following a link."""
    if isinstance(data, str):
        data = data.encode()
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IdentityError(f"{path.name} in the VE is not a regular file")
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def machine_id() -> str:
    return secrets.token_hex(16)


def host_keys(comment: str) -> dict[str, tuple[bytes, bytes]]:
    """New SSH host keys, made on the host with its ssh-keygen (never a binary of the VE)."""
    tmp = tempfile.mkdtemp(prefix="hako-hostkeys-")
    try:
        procs = {}
        for t in HOST_KEY_TYPES:
            procs[t] = subprocess.Popen(
                ["ssh-keygen", "-q", "-N", "", "-t", t, "-C", comment, "-f", f"{tmp}/ssh_host_{t}_key"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        keys = {}
        for t, p in procs.items():
            _, err = p.communicate(timeout=60)
            if p.returncode != 0:
                raise IdentityError(f"ssh-keygen failed: {err.decode(errors='replace').strip()[:200]}")
            base = Path(tmp) / f"ssh_host_{t}_key"
            keys[t] = (base.read_bytes(), base.with_suffix(".pub").read_bytes())
        return keys
    except FileNotFoundError:
        raise IdentityError("ssh-keygen is not installed on this node (package openssh-client)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SHADOW_MAX = 16 * 1024 * 1024


def set_root_password(root: Path, password_hash: str) -> None:
    """Put ``password_hash`` (already validated: ``$6$...``, no ':' or newline) into the
    root entry of the VE's /etc/shadow.

    The tree may be one the VE's root has touched (``passwd`` on a stopped VE), so /etc and
    /etc/shadow are opened without following links (a symlink to a host file is refused),
    and the new file is written next to the old one and renamed over it: a crash leaves
    either the old or the new shadow, never half of one.
    """
    etc = _dir(root, "etc")
    try:
        dfd = os.open(etc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise IdentityError("/etc in the VE is not a directory") from None
    try:
        try:
            fd = os.open("shadow", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            raise IdentityError("/etc/shadow in the VE is missing") from None
        except OSError:
            raise IdentityError("/etc/shadow in the VE is a symbolic link or cannot be opened") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IdentityError("/etc/shadow in the VE is not a regular file")
            if st.st_size > SHADOW_MAX:
                raise IdentityError("/etc/shadow in the VE is implausibly large")
            data = f.read(SHADOW_MAX + 1)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        days = str((datetime.date.today() - datetime.date(1970, 1, 1)).days).encode()
        for i, line in enumerate(lines):
            fields = line.split(b":")
            if fields[0] == b"root":
                fields += [b""] * (9 - len(fields))
                fields[1], fields[2] = password_hash.encode(), days
                lines[i] = b":".join(fields)
                break
        else:
            lines.insert(0, b"root:" + password_hash.encode() + b":" + days + b":0:99999:7:::")
        tmp = f".shadow.hako-{secrets.token_hex(8)}"
        tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=dfd)
        try:
            try:
                os.fchown(tfd, st.st_uid, st.st_gid)  # as it was (Debian: root:shadow 0640)
                os.fchmod(tfd, stat.S_IMODE(st.st_mode))
                payload = b"\n".join(lines) + b"\n"
                while payload:
                    payload = payload[os.write(tfd, payload):]
                os.fsync(tfd)
            finally:
                os.close(tfd)
            os.rename(tmp, "shadow", src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(dfd)


def write_identity(root: Path, *, hostname: str, password_hash: str | None = None,
                   ssh_keys: list[str] | None = None, log: Callable[[str], None] = lambda _: None) -> dict:
    """Write a new VE's identity into its mounted tree ``root``; returns what was made."""
    etc = _dir(root, "etc")
    made = {}
    mid = machine_id()
    write_file(etc / "machine-id", mid + "\n", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        write_file(dbus_id, mid + "\n", 0o444)
    made["machine_id"] = mid
    ssh = etc / "ssh"
    if ssh.is_dir() and not ssh.is_symlink() and (ssh / "sshd_config").exists():
        for old in ssh.glob("ssh_host_*"):
            old.unlink()
        fingerprints = []
        for t, (private, public) in host_keys(f"root@{hostname}").items():
            write_file(ssh / f"ssh_host_{t}_key", private, 0o600)
            write_file(ssh / f"ssh_host_{t}_key.pub", public, 0o644)
            fingerprints.append(public.split()[0].decode())
        made["host_keys"] = fingerprints
        log(f"Generated SSH host keys: {', '.join(HOST_KEY_TYPES)}")
    if password_hash:
        set_root_password(root, password_hash)
        conf_d = ssh / "sshd_config.d"
        if conf_d.is_dir() and not conf_d.is_symlink():
            # Debian's sshd refuses passwords for root by default; the customer set one to log in.
            write_file(conf_d / "hako-root-login.conf",
                       "# Written by Hako at create: a root password was set.\nPermitRootLogin yes\n", 0o644)
        made["root_password"] = True
        log("Set root password")
    if ssh_keys:
        dot_ssh = _dir(root, "root/.ssh", mode=0o700, create=True)
        write_file(dot_ssh / "authorized_keys", "".join(k + "\n" for k in ssh_keys), 0o600)
        made["authorized_keys"] = len(ssh_keys)
        log(f"Installed {len(ssh_keys)} authorized SSH key(s) for root")
    return made
