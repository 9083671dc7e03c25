"""Real processes for integration tests: a panel worker and node agents.

Tests survive the leftovers of a run that was killed: every process started here writes a
pid file under TEST_ROOT, and ``clean_leftovers`` kills those processes, stops and removes
containers under the test node roots and unmounts their images before a run starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_ROOT = Path(os.environ.get("HAKO_TEST_ROOT", "/var/lib/hako-test"))
PIDS = TEST_ROOT / "pids"
PYTHON = sys.executable


def _kill_group(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def clean_node_root(root: Path) -> None:
    """Stop every container under a test node root, unmount its images, delete the root."""
    lxcpath = root / "lxc"
    if lxcpath.is_dir():
        for ct in lxcpath.iterdir():
            if ct.is_dir():
                subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", ct.name, "-k"], capture_output=True,
                               timeout=60, cwd="/")
    for _ in range(3):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(root) + "/")]
        if not mounts:
            break
        # Deepest first: VE disks (mnt/<veid>) live on the storage pool (pool/), which can
        # only go once they are gone.
        for mnt in sorted(mounts, key=lambda m: (m.count("/"), len(m)), reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=60)
        detach_loops(root)
    detach_loops(root)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, timeout=120)
    detach_loops(root)  # a loop device of a file rm just unlinked (a lazily unmounted pool)


def detach_loops(root: Path) -> None:
    """Detach the loop devices backed by files under ``root`` (VE disks, the pool's file)
    that a killed run left attached; VE disks first, the pool file last."""
    proc = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True,
                          timeout=60)
    prefix = str(root) + "/"
    devs = []
    for line in proc.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].startswith(prefix):
            devs.append((parts[1].endswith(".xfs") or ".xfs " in parts[1], parts[0]))
    for _, dev in sorted(devs):
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)


_LOCK = None


def lock_test_root() -> None:
    """Serialise test sessions that share TEST_ROOT (and so Redis db, database, node name
    and VEIDs): a second session waits instead of killing the first one's processes."""
    global _LOCK
    import fcntl

    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    _LOCK = open(TEST_ROOT / ".session.lock", "w")
    try:
        fcntl.flock(_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another test session using {TEST_ROOT} ...", flush=True)
        fcntl.flock(_LOCK, fcntl.LOCK_EX)


def kill_pidfiles(pid_dir: Path, only: tuple[bytes, ...] = (b"containers.agent", b"celery")) -> None:
    """Kill the processes of a killed earlier run recorded in ``pid_dir``, but only if the
    pid still belongs to one of ours (checked by command line: pids get reused)."""
    for pidfile in pid_dir.glob("*.pid") if pid_dir.is_dir() else []:
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ValueError, FileNotFoundError, ProcessLookupError):
            cmdline = b""
        if any(marker in cmdline for marker in only):
            _kill_group(pid)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
        pidfile.unlink(missing_ok=True)


def clean_leftovers() -> None:
    if PIDS.is_dir():
        for pidfile in PIDS.glob("*.pid"):
            try:
                _kill_group(int(pidfile.read_text().strip()))
            except ValueError:
                pass
            pidfile.unlink(missing_ok=True)
    if TEST_ROOT.is_dir():
        for root in TEST_ROOT.glob("node-*"):
            clean_node_root(root)
    PIDS.mkdir(parents=True, exist_ok=True)


class Proc:
    """A child process in its own session, with a pid file and a log file.

    ``pid_dir`` keeps the pid files of a separate owner (a benchmark) out of the tests'
    PIDS, so that a test session's ``clean_leftovers`` never kills it; ``fresh_log`` starts
    each run with an empty log.
    """

    def __init__(self, name: str, argv: list[str], env: dict, *, pid_dir: Path | None = None,
                 fresh_log: bool = False):
        self.name, self.argv, self.env = name, argv, env
        self.pid_dir = pid_dir or PIDS
        self.fresh_log = fresh_log
        self.log = TEST_ROOT / "log" / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    @property
    def pidfile(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"

    def start(self, extra_env: dict | None = None) -> "Proc":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        if self.fresh_log:
            self.log.unlink(missing_ok=True)
        env = {**os.environ, **self.env, **(extra_env or {})}
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        logf = open(self.log, "ab")
        self.popen = subprocess.Popen(self.argv, env=env, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.pidfile.write_text(str(self.popen.pid))
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crash or OOM kill looks like."""
        if self.popen is not None:
            _kill_group(self.popen.pid)
            self.popen.wait(timeout=30)
            self.pidfile.unlink(missing_ok=True)

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or not self.alive():
            return
        _kill_group(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.pidfile.unlink(missing_ok=True)

    def log_since_start(self) -> str:
        """What this process wrote since its last start (the log file keeps older runs)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(getattr(self, "log_offset", 0))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def panel_worker(env: dict) -> Proc:
    return Proc("panel-worker", [
        PYTHON, "-m", "celery", "-A", "panel", "worker", "-Q", "panel", "-n", "hakotest-panel@%h",
        "--pool", "prefork", "-c", "2", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-l", "INFO"], env)


def node_agent(name: str, key: str, broker: str, root: Path, env: dict | None = None) -> Proc:
    return Proc(f"agent-{name}", [PYTHON, "-m", "containers.agent"], {
        "HAKO_NODE_NAME": name, "HAKO_NODE_KEY": key, "HAKO_BROKER_URL": broker,
        "HAKO_NODE_ROOT": str(root), "HAKO_HEARTBEAT_INTERVAL": "0.5", "HAKO_STOP_TIMEOUT": "10",
        **(env or {})})


def remove_all_ves(root: Path) -> None:
    """Kill and delete every VE of a test node while its agent keeps running."""
    lxcpath = root / "lxc"
    if lxcpath.is_dir():
        for ct in lxcpath.iterdir():
            if ct.is_dir():
                subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", ct.name, "-k"], capture_output=True,
                               timeout=60, cwd="/")
    # Every mount under the VE directories, deepest first, from /proc/mounts: roots
    # (mnt/<veid>: a flat disk or a layered VE's overlay), layered VEs' raw disks, and the
    # staging mounts a killed start left. os.path.ismount misses idmapped clones of a
    # template's layer (same filesystem), and rm -rf would go through them into the layer.
    prefixes = tuple(f"{root}/{sub}/" for sub in ("mnt", "disk", "stage"))
    for _ in range(3):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(prefixes)]
        for d in sorted(mounts, key=lambda m: -m.count("/")):
            subprocess.run(["umount", "-l", d], capture_output=True, timeout=60)
    for sub in ("images", "state/ves", "lxc", "mnt", "disk", "stage"):
        d = root / sub
        if d.is_dir():
            for p in d.iterdir():
                subprocess.run(["rm", "-rf", "--one-file-system", str(p)], capture_output=True, timeout=60)


def ve_is_layered(node_root: Path, veid: int) -> bool:
    """Whether a VE's root is layered (the agent records the template layer it runs over)."""
    return (node_root / "state" / "ves" / f"{veid}.layer").exists()


def ve_disk_mount(node_root: Path, veid: int) -> Path:
    """Where the VE's own image is mounted raw: its root (flat) or its layers' disk."""
    return node_root / ("disk" if ve_is_layered(node_root, veid) else "mnt") / str(veid)


def as_ve_root(node_root: Path, ve, fn):
    """Run ``fn`` (a host-side write under ``mnt/<veid>``) as the VE's root would own it:
    a layered VE's running root is idmapped, where host root's own ids do not exist."""
    if not ve_is_layered(node_root, ve.veid):
        return fn()
    from containers import layers

    return layers.as_fs_id(ve.uid_base, fn)
