"""Layered VE roots: one read-only tree per template, shared by every VE made from it,
under each VE's own upper layer on its ext4 image (overlayfs).

Why: with a whole root per VE (its own ext4 image), every VE caches its own copy of the
same systemd, libc and busybox pages, and a node runs out of memory at a few hundred
debian-12 VEs. With a shared lower layer the kernel caches those files once. The VE's
image still holds everything the VE writes (its upper layer), so its size stays a hard
quota on what the VE can store.

Ids: files stay unshifted on disk (root is uid 0 in the template and in the image), as in
a flat VE. A running VE's overlay is built from *idmapped* mounts of both layers (the VE's
id range: on-disk 0 is host ``base``), and is created with the file-system ids of the VE's
root, so that overlayfs's own work (copy-up, its work directory) lands in the image
unshifted as well. LXC then takes the overlay as its rootfs without idmapping it again:
overlayfs itself cannot be idmapped, its layers can (Linux 5.19+).

Offline work (identity at create, the root password of a stopped VE) uses a "raw" overlay
of the same layers, mounted without idmaps by root. The two are never mounted at once.

Only the mount API syscalls (open_tree, mount_setattr, move_mount, fsopen, fsconfig,
fsmount) and per-thread setfsuid/capset are called here, through libc; no value from a
message reaches them other than validated integers and paths the agent made itself.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 and aarch64 share the numbers of the new mount API (424+); setfsuid & co differ.
SYS = {
    "x86_64": {"setfsuid": 122, "setfsgid": 123, "capget": 125, "capset": 126},
    "aarch64": {"setfsuid": 151, "setfsgid": 152, "capget": 90, "capset": 91},
}[os.uname().machine]
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT, SYS_MOUNT_SETATTR = 428, 429, 430, 431, 432, 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
O_CLOEXEC = 0o2000000
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOATIME = 0x00000010
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class LayerError(RuntimeError):
    """A layered root could not be mounted; the message names the step."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise LayerError(f"{what}: {os.strerror(err)}")
    return ret


def userns_fd(base: int, size: int) -> int:
    """A file descriptor of a user namespace mapping ids 0..size-1 to base..base+size-1.

    The namespace needs a process only while its maps are written: ``unshare`` makes it
    and waits on its stdin; the descriptor keeps the namespace alive after it exits.
    """
    proc = subprocess.Popen(["unshare", "--user", "--", "cat"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    try:
        mine = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/ns/user") == mine:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LayerError("could not make a user namespace for the VE's id range")
            time.sleep(0.0005)
        for kind in ("uid", "gid"):
            with open(f"/proc/{proc.pid}/{kind}_map", "w") as f:
                f.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def idmapped_mount(src: Path, dst: Path, ns_fd: int) -> None:
    """Attach at ``dst`` a clone of the mount tree at ``src``, idmapped through ``ns_fd``."""
    fd = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, str(src).encode(), OPEN_TREE_CLONE | O_CLOEXEC),
                f"open_tree {src}")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns_fd)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
               f"idmapping {src}")
        _check(_libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, str(dst).encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"attaching {dst}")
    finally:
        os.close(fd)


def _raise_effective_caps() -> None:
    """Put every permitted capability back into this thread's effective set (setfsuid
    away from 0 clears the file-system ones)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(SYS["capget"], ctypes.byref(hdr), data), "capget")
    for d in data:
        d.effective = d.permitted
    _check(_libc.syscall(SYS["capset"], ctypes.byref(hdr), data), "capset")


def _mount_overlay_here(lower: Path, upper: Path, work: Path, target: Path) -> None:
    fs = _check(_libc.syscall(SYS_FSOPEN, b"overlay", 1), "fsopen overlay")  # FSOPEN_CLOEXEC
    try:
        for key, value in (("source", "hako"), ("lowerdir", str(lower)), ("upperdir", str(upper)),
                           ("workdir", str(work))):
            _check(_libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0),
                   f"overlay option {key}")
        _check(_libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0), "creating the overlay")
        # FSMOUNT_CLOEXEC; nodev and noatime, as the VE's image itself is mounted
        mnt = _check(_libc.syscall(SYS_FSMOUNT, fs, 1, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME), "fsmount")
        try:
            _check(_libc.syscall(SYS_MOVE_MOUNT, mnt, b"", AT_FDCWD, str(target).encode(), MOVE_MOUNT_F_EMPTY_PATH),
                   f"attaching the overlay at {target}")
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path, fs_id: int | None = None) -> None:
    """Mount an overlay at ``target``. With ``fs_id``, the overlay is created by a thread
    whose file-system uid and gid are ``fs_id`` (with all of root's capabilities): overlayfs
    does its own work with its creator's credentials, and through idmapped layers host
    ``fs_id`` is what lands on disk as 0."""
    if fs_id is None:
        _mount_overlay_here(lower, upper, work, target)
    else:
        as_fs_id(fs_id, lambda: _mount_overlay_here(lower, upper, work, target))


def as_fs_id(fs_id: int, fn):
    """Run ``fn`` in a new thread whose file-system uid and gid are ``fs_id``, keeping all
    of root's capabilities; return its result. Other threads are not affected."""
    result: list = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            # Raw syscalls: they change this thread's credentials only, and the thread ends here.
            _libc.syscall(SYS["setfsgid"], fs_id)
            _libc.syscall(SYS["setfsuid"], fs_id)
            _raise_effective_caps()
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    t = threading.Thread(target=body, name="as-fs-id")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def detach(path: Path, busy_retries: int = 0) -> None:
    """Unmount whatever is mounted at ``path``; nothing when nothing is. A busy mount is
    tried ``busy_retries`` more times, 0.1 s apart, then detached lazily (it goes when its
    last user does). A syscall, not umount(8): a start or stop makes several of these.

    Not ``os.path.ismount``: an idmapped clone of a directory on the same filesystem (a
    template's lower layer) has the device and inodes of its source, and ismount says
    False. Left mounted, a later ``rm -rf`` of the staging directory would empty the
    template's shared layer through it."""
    busy = 0
    for _ in range(busy_retries + 8):  # mounts can be stacked
        if _libc.umount2(str(path).encode(), 0) == 0:
            continue
        err = ctypes.get_errno()
        if err in (22, 2):  # EINVAL: not a mount point; ENOENT: no such path
            return
        if err == 16:  # EBUSY
            if busy < busy_retries:
                busy += 1
                time.sleep(0.1)
                continue
            if _libc.umount2(str(path).encode(), 2) == 0:  # MNT_DETACH
                continue
            err = ctypes.get_errno()
        raise LayerError(f"cannot unmount {path}: {os.strerror(err)}")
