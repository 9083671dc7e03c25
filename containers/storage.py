"""The node's storage pool: VE disks as reflink clones of one golden image per template.

DESIGN.md, "A provisioning path proven on these hosts": a template becomes a golden ext4
image once; a new VE's disk is a reflink copy of it (``FICLONE``, a few milliseconds and no
data copied), grown to the VE's size. The disk stays a per-VE ext4 image with no reserved
blocks, so its size is still a hard quota.

Layout (``<pool>`` is ``<root>/pool`` or the admin's dedicated disk, see config.pool):

* ``<pool>/images/<veid>.img``  VE disks; ``<root>/images`` is a symlink to this directory,
                                so every existing path (Runtime.image) lands on the pool;
* ``<pool>/golden/<template>.<stamp>.img``         the template unpacked into a minimal
                                ext4 image; ``<stamp>`` is the archive's mtime and size, so a
                                rebuilt template never reuses an old golden image;
* ``<pool>/golden/<template>.<stamp>.<bytes>.img`` the golden image grown to one VE size,
                                made on first use: the next VEs of that size are a pure clone.

Online ext4 growth needs CAP_SYS_RESOURCE, which these hosts do not give root; offline
``resize2fs`` of a clean, never-mounted clone takes 15-30 ms up to 100 GiB, so goldens grow
offline. When the pool cannot reflink (another filesystem, a legacy images directory),
``clone_ok`` is False and the runtime falls back to mkfs + tar.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable

from .config import AgentConfig

log = logging.getLogger("hako.storage")

FICLONE = 0x40049409  # _IOW(0x94, 9, int): clone a whole file (reflink)
MiB = 1024 * 1024
GOLDEN_MIN = 256 * MiB
SIZED_GOLDENS_KEPT = 32  # per template; each costs only the metadata resize2fs wrote


class PoolError(RuntimeError):
    """The pool cannot be prepared or used; the message is meant for the job log."""


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise PoolError(f"{os.path.basename(argv[0])} failed: {err[-1] if err else proc.returncode}")
    return proc


def reflink(src: Path, dst: Path, mode: int = 0o600) -> None:
    """Clone ``src`` to the new file ``dst`` sharing all extents (no data is copied)."""
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError:
            os.close(dfd)
            dfd = -1
            os.unlink(dst)
            raise
        finally:
            if dfd >= 0:
                os.close(dfd)
    finally:
        os.close(sfd)


# Loop devices (linux/loop.h). ``mount -o loop`` asks libmount whether the image is
# already attached somewhere, which reads the backing file of every loop device in sysfs:
# with thousands of running VEs that scan made each start slower than the one before it
# (0.1 s at 0 VEs, 0.27 s at 900). Attaching through the ioctls costs the same at any count.
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # attach and configure in one call (Linux 5.8+)
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4  # detach by itself when the last user (the mount) lets go
BLKFLSBUF = 0x1261  # flush and drop a block device's buffer cache
# No LO_FLAGS_DIRECT_IO: direct I/O would spare the second copy of each block in the
# image file's page cache, but on this kernel it left that cache stale for buffered
# readers after the umount (e2fsck of a fresh golden image read mkfs's blocks), and
# resize2fs and e2fsck read the images buffered. Measured without it: 2.4 MiB per idle
# busybox VE (bench/density.py).
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")
_LOOP_CONFIG = struct.Struct(f"=II{_LOOP_INFO64.size}s8Q")


def _configure_loop(loop_fd: int, backing: int, image: Path, flags: int) -> None:
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, os.fsencode(str(image))[:63], b"", b"", 0, 0)
    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, _LOOP_CONFIG.pack(backing, 0, info, *[0] * 8))


@contextlib.contextmanager
def attached_loop(image: Path, read_only: bool = False):
    """Attach ``image`` to a free loop device with autoclear and yield the device path.

    The device stays attached while this block holds it open; mount it inside the block,
    and the mount keeps it from then on (it detaches at umount). If the mount fails, the
    device detaches when the block ends. Another process may claim the same free device
    between GET_FREE and CONFIGURE: the kernel then answers EBUSY and we take the next.
    """
    flags = os.O_RDONLY if read_only else os.O_RDWR
    backing = os.open(image, flags | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(64):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{number}"
                try:
                    loop_fd = os.open(dev, flags | os.O_CLOEXEC)
                except FileNotFoundError:  # no devtmpfs node yet (a container's /dev)
                    os.mknod(dev, 0o660 | stat.S_IFBLK, os.makedev(7, number))
                    loop_fd = os.open(dev, flags | os.O_CLOEXEC)
                try:
                    _configure_loop(loop_fd, backing, image,
                                    LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0))
                except OSError as e:
                    os.close(loop_fd)
                    if e.errno == errno.EBUSY:
                        continue
                    raise PoolError(f"cannot attach {image.name} to {dev}: {e.strerror}") from None
                # A reused device must not serve blocks it cached for the image it backed
                # before (another VE's filesystem): drop its buffer cache before the mount.
                fcntl.ioctl(loop_fd, BLKFLSBUF, 0)
                break
            else:
                raise PoolError(f"no free loop device for {image.name} after 64 tries")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)  # the loop device holds its own reference to the file
    try:
        yield dev
    finally:
        os.close(loop_fd)


def mount_image(image: Path, mountpoint: Path, fstype: str = "ext4", options: str = "noatime,nodev") -> None:
    """Mount a filesystem image through its own loop device (see ``attached_loop``)."""
    with attached_loop(image) as dev:
        _run(["mount", "-t", fstype, "-o", options, dev, str(mountpoint)])


def golden_size(archive_bytes: int) -> int:
    """Size of a template's base golden image: its files plus a quarter and the journal,
    at least 256 MiB, in 64 MiB steps. VEs smaller than this are made by mkfs + tar."""
    want = max(GOLDEN_MIN, archive_bytes * 5 // 4 + 64 * MiB)
    return -(-want // (64 * MiB)) * 64 * MiB


class Pool:
    """The storage pool of one node agent."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.dir = cfg.pool_dir
        self._clone_ok: bool | None = None
        self.problem = ""  # why cloning is off, for the heartbeat and the log

    @property
    def images_dir(self) -> Path:
        return self.dir / "images"

    @property
    def golden_dir(self) -> Path:
        return self.dir / "golden"

    # --- preparation (agent start) ---------------------------------------------------
    def prepare(self) -> dict:
        """Mount the pool (loop mode), link ``<root>/images`` into it and probe reflink.

        Idempotent: an agent restart finds everything in place and changes nothing.
        """
        self._clone_ok = False
        if self.dir is None:
            self.problem = "no pool configured (HAKO_POOL=none)"
            return self.info()
        if self.cfg.pool == "loop":
            self._mount_loop()
        elif not os.path.ismount(self.dir) and not self.dir.is_dir():
            raise PoolError(f"HAKO_POOL={self.dir} is not a directory (mount the pool's disk there)")
        self.images_dir.mkdir(exist_ok=True)
        self.golden_dir.mkdir(exist_ok=True)
        os.chmod(self.images_dir, 0o700)
        if not self._link_images():
            return self.info()
        self._clone_ok = self._probe()
        if not self._clone_ok:
            self.problem = f"{self.dir} cannot reflink (XFS made with reflink=1 or btrfs needed)"
        else:
            self.problem = ""
        return self.info()

    def _mount_loop(self) -> None:
        if os.path.ismount(self.dir):
            return
        f = self.cfg.pool_file
        if not f.exists():
            size = self.cfg.pool_size
            if not size:
                st = os.statvfs(self.cfg.root)
                size = st.f_bavail * st.f_frsize
            size = max(1024 * MiB, size // (1024 * MiB) * 1024 * MiB)
            tmp = f.with_name(f.name + ".new")
            tmp.unlink(missing_ok=True)
            with open(tmp, "wb") as fh:
                fh.truncate(size)
            os.chmod(tmp, 0o600)
            _run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", "-L", "hakopool", str(tmp)])
            os.replace(tmp, f)
            log.info("storage pool: made %s (XFS, reflink, %d GiB sparse)", f, size >> 30)
        self.dir.mkdir(exist_ok=True)
        # discard: blocks the pool frees (a destroyed VE's disk) become holes in the loop
        # file again, so the host's filesystem gets its space back.
        mount_image(f, self.dir, "xfs", "noatime,discard")
        log.info("storage pool: mounted %s at %s", f, self.dir)

    def _link_images(self) -> bool:
        """Make ``<root>/images`` the pool's images directory (a symlink)."""
        link = self.cfg.images
        target = self.images_dir
        if link.is_symlink():
            if Path(os.readlink(link)) == target:
                return True
            link.unlink()
        elif link.is_dir():
            if any(link.iterdir()):
                # VE disks made before the pool existed stay where they are; new ones too,
                # so that one directory holds them all. Cloning stays off.
                self.problem = f"{link} holds disks made before the pool; not using the pool"
                log.warning("storage pool: %s", self.problem)
                return False
            link.rmdir()
        link.symlink_to(target)
        return True

    def _probe(self) -> bool:
        src, dst = self.golden_dir / ".probe-src", self.golden_dir / ".probe-dst"
        for p in (src, dst):
            p.unlink(missing_ok=True)
        try:
            with open(src, "wb") as fh:
                fh.write(b"\0" * 65536)
            reflink(src, dst)
            return True
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                log.warning("storage pool: reflink probe failed: %s", e)
            return False
        finally:
            for p in (src, dst):
                p.unlink(missing_ok=True)

    @property
    def clone_ok(self) -> bool:
        """True when new VE disks can be reflink clones. A Runtime used without the agent
        (benchmarks) finds out once, without mounting anything."""
        if self._clone_ok is None:
            self._clone_ok = bool(
                self.dir is not None and self.golden_dir.is_dir() and self.cfg.images.is_symlink()
                and self.cfg.images.resolve() == self.images_dir.resolve() and self._probe())
        return self._clone_ok

    def info(self) -> dict:
        out = {"mode": self.cfg.pool, "reflink": bool(self._clone_ok)}
        if self.problem:
            out["problem"] = self.problem
        if self.dir is not None and self.dir.is_dir():
            st = os.statvfs(self.dir)
            out.update(dir=str(self.dir), size=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize)
        return out

    # --- golden images -----------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, name: str):
        with open(self.golden_dir / f".{name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _stamp(archive: Path) -> str:
        st = archive.stat()
        return f"{st.st_mtime_ns:x}-{st.st_size:x}"

    def golden(self, name: str, archive: Path, size: int, log_line: Callable[[str], None] = lambda _: None,
               ) -> Path | None:
        """The golden image of template ``name`` at exactly ``size`` bytes, made if needed;
        None when ``size`` is smaller than the template's base golden image."""
        stamp = self._stamp(archive)
        sized = self.golden_dir / f"{name}.{stamp}.{size}.img"
        if sized.exists():
            return sized
        base = self.golden_dir / f"{name}.{stamp}.img"
        with self._lock(name):
            if not base.exists():
                self._drop(name)
                log_line(f"Preparing the golden image of OS template {name} (once per template)")
                self._build_base(name, archive, base)
            base_size = base.stat().st_size
            if size < base_size:
                return None
            if size == base_size:
                return base
            if not sized.exists():
                tmp = self.golden_dir / f".{sized.name}.new"
                tmp.unlink(missing_ok=True)
                reflink(base, tmp)
                try:
                    with open(tmp, "r+b") as fh:
                        fh.truncate(size)
                    # -f: the base was checked by e2fsck and never mounted since.
                    _run(["resize2fs", "-f", str(tmp)])
                    os.replace(tmp, sized)
                finally:
                    tmp.unlink(missing_ok=True)
                self._prune(name, stamp)
            return sized

    def ensure_base(self, name: str, archive: Path, log_line: Callable[[str], None] = lambda _: None) -> Path:
        """Make the base golden image of a template now (after a build, at agent start)."""
        stamp = self._stamp(archive)
        base = self.golden_dir / f"{name}.{stamp}.img"
        with self._lock(name):
            if not base.exists():
                self._drop(name)
                t0 = time.monotonic()
                self._build_base(name, archive, base)
                log_line(f"Golden image of {name}: {base.stat().st_size // MiB}M ext4, made in "
                         f"{time.monotonic() - t0:.1f}s")
        return base

    def _build_base(self, name: str, archive: Path, base: Path) -> None:
        tmp = self.golden_dir / f".{base.name}.new"
        mnt = self.cfg.mounts / f".golden-{name}"
        tmp.unlink(missing_ok=True)
        with open(tmp, "wb") as fh:
            fh.truncate(golden_size(archive.stat().st_size))
        os.chmod(tmp, 0o600)
        try:
            # The same geometry mkfs gives a large disk (4 KiB blocks, 256-byte inodes), so a
            # grown clone is an ordinary ext4; -m 0: no reserved blocks, the size is the quota.
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-I", "256", "-i", "16384", "-J", "size=32",
                  "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L", "hako", str(tmp)])
            mnt.mkdir(parents=True, exist_ok=True)
            mount_image(tmp, mnt)
            try:
                _run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(mnt)])
            finally:
                _run(["umount", str(mnt)])
            proc = subprocess.run(["e2fsck", "-f", "-p", str(tmp)], capture_output=True, timeout=600, cwd="/")
            if proc.returncode >= 4:
                out = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
                raise PoolError(f"e2fsck found errors in the new golden image of {name}: {' | '.join(out[-3:])}")
            os.replace(tmp, base)
            (self.golden_dir / f"{name}.json").write_text(json.dumps(
                {"template": name, "image": base.name, "size": base.stat().st_size, "made_at": time.time()}))
        finally:
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                mnt.rmdir()

    def _prune(self, name: str, stamp: str) -> None:
        sized = sorted(self.golden_dir.glob(f"{name}.{stamp}.*.img"), key=lambda p: p.stat().st_mtime)
        for p in sized[:-SIZED_GOLDENS_KEPT]:
            p.unlink(missing_ok=True)

    def _drop(self, name: str) -> int:
        n = 0
        for p in self.golden_dir.glob(f"{name}.*.img"):
            # "<name>.<stamp>..." only: debian-12 must not match debian-12.1's files.
            if p.name[len(name) + 1:].split(".")[0].count("-") == 1:
                p.unlink(missing_ok=True)
                n += 1
        (self.golden_dir / f"{name}.json").unlink(missing_ok=True)
        return n

    def drop(self, name: str) -> int:
        """Forget a template's golden images (template removed or rebuilt). VEs cloned from
        them keep their data: a reflink clone owns its extents as much as the original."""
        if self.dir is None or not self.golden_dir.is_dir():
            return 0
        with self._lock(name):
            return self._drop(name)
