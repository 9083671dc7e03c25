"""OS templates: debian-12 (debootstrap) VEs boot systemd and sshd with an identity of
their own; the root password travels as a hash, keys land with mode 600; bad identity
input is refused by the panel and, if it gets past the panel, by the node; vztmpl."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from panel.models import VE, AuditEvent, Job, Node, OSTemplate
from panel.services import templates as tsvc
from panel.services import ves as svc
from panel.services.errors import InvalidInput
from panel.services.identity import sha512_crypt
from panel.services.jobs import job_wait
from tests.conftest import run
from tests.harness import REPO, wait_for

# The first test that needs debian-12 on a fresh machine waits for debootstrap (~1 min).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMqmlAXDyKhe7vVw1B9wB3Mf5WMGduspsONkAAQyatnH test1@hako"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAkO5cQ3chYWk0Nvn/af+g/qUSbEXje2uKwKTczZ4my test2@hako"
PASSWORD = "correct horse battery staple"


def manage(stack, *argv, timeout=600):
    env = {**os.environ, "HAKO_DATABASE_URL": stack.db_url}
    return subprocess.run([sys.executable, "manage.py", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def init_pid(stack, veid: int) -> int:
    out = subprocess.run(["lxc-info", "-P", str(stack.node_root / "lxc"), "-n", str(veid), "-p", "-H"],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else 0


def sshd_listening(stack, veid: int) -> bool:
    """Port 22 in LISTEN in the VE's own network namespace, read from the host."""
    pid = init_pid(stack, veid)
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if any(r.split()[1].endswith(":0016") and r.split()[3] == "0A" for r in rows):
            return True
    return False


def sh(ve, *argv) -> str:
    job = run(svc.ve_exec(ve=ve, argv=list(argv)))
    assert job.result["exit_code"] == 0, job.result
    return job.result["output"]


@pytest.fixture
def debian(node, debian12):
    OSTemplate.objects.get_or_create(name=debian12)
    return debian12


def test_debian_ve_boots_systemd_and_sshd_with_its_own_identity(stack, node, tenant, debian):
    a = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=debian, node=node, hostname="deb-a",
                                            disk=2 << 30, root_password=PASSWORD, ssh_keys=[KEY1]),
                              timeout=300).ve_id)
    b_job = run(svc.ve_create(tenant=tenant, template=debian, node=node, hostname="deb-b", ssh_keys=KEY2 + "\n"))
    b = VE.objects.get(pk=b_job.ve_id)
    for ve in (a, b):
        run(svc.ve_start(ve=ve))
    for ve in (a, b):
        wait_for(lambda ve=ve: sshd_listening(stack, ve.veid), 30, what=f"sshd listening in VE {ve.veid}")

    # init is PID 1 (systemd, Debian's default), sshd listens, nothing failed while booting.
    ps = sh(a, "ps", "-eo", "pid,comm")
    assert [line.split() for line in ps.splitlines()][1] == ["1", "systemd"], ps
    assert "sshd" in ps
    assert ":22 " in sh(a, "ss", "-ltn")
    wait_for(lambda: svc_state(a) in ("running", "degraded"), 30, what="systemd to finish booting")
    assert svc_state(a) == "running", sh(a, "systemctl", "--failed", "--no-legend")

    # Identity: host keys and machine-id are per VE; the template holds none.
    keys = {ve.veid: sh(ve, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", "/etc/ssh/ssh_host_ecdsa_key.pub")
            for ve in (a, b)}
    assert keys[a.veid] != keys[b.veid]
    assert "root@deb-a" in keys[a.veid]
    mids = {ve.veid: sh(ve, "cat", "/etc/machine-id").strip() for ve in (a, b)}
    assert mids[a.veid] != mids[b.veid] and all(len(m) == 32 and int(m, 16) >= 0 for m in mids.values())
    assert sh(a, "hostname").strip() == "deb-a"

    # The root password is in /etc/shadow as the SHA-512 hash of what the customer gave.
    entry = sh(a, "grep", "^root:", "/etc/shadow").strip().split(":")
    assert entry[1].startswith("$6$")
    salt = entry[1].split("$")[2]
    assert sha512_crypt(PASSWORD, salt) == entry[1]
    assert "PermitRootLogin yes" in sh(a, "cat", "/etc/ssh/sshd_config.d/hako-root-login.conf")
    assert sh(b, "grep", "^root:", "/etc/shadow").split(":")[1] in ("*", "!", "!*", "")

    # Keys land in /root/.ssh/authorized_keys, mode 600, owned by the VE's root.
    assert sh(a, "stat", "-c", "%a %U", "/root/.ssh/authorized_keys").split() == ["600", "root"]
    assert sh(a, "stat", "-c", "%a", "/root/.ssh").strip() == "700"
    assert sh(a, "cat", "/root/.ssh/authorized_keys") == KEY1 + "\n"
    assert sh(b, "cat", "/root/.ssh/authorized_keys") == KEY2 + "\n"

    # The clear password never left the panel: only the hash, only in the job's args, and
    # the finished job keeps not even that.
    create = Job.objects.get(ve=a, kind="create")
    assert "root_password_hash" not in create.args
    assert PASSWORD not in str(create.args) and "$6$" not in str(a.spec())
    detail = AuditEvent.objects.get(action="ve.create", object_id=str(a.veid)).detail
    assert detail["root_password"] == "set" and "$6$" not in str(detail)
    lines = [line.message for line in create.logs.all()]
    assert "Generated SSH host keys: ed25519, ecdsa" in lines and "Set root password" in lines

    # The disk is a hard quota of the size sold.
    size = int(sh(a, "df", "-B1", "--output=size", "/").split()[-1])
    assert 0.9 * (2 << 30) < size <= 2 << 30


def svc_state(ve) -> str:
    return run(svc.ve_exec(ve=ve, argv=["systemctl", "is-system-running"])).result["output"].strip()


HOSTILE_HASHES = [
    "", "secret", "$1$salt$0123456789abcdef0123456", "$5$salt$" + "a" * 43, "$6$salt$short",
    "$6$salt$" + "a" * 86 + "\nroot::0:0:::::", "$6$sa:lt$" + "a" * 86, "$6$salt$" + "a" * 85 + ":",
    "$6$rounds=10$salt$" + "a" * 86, "$6$" + "s" * 17 + "$" + "a" * 86, "$6$salt$" + "ä" * 86, 12345,
]
HOSTILE_KEYS = [
    ["ssh-rsa notbase64!!"],
    ['command="rm -rf /" ' + KEY1],
    [KEY1 + "\nssh-ed25519 AAAA injected"],
    ["ssh-ed25519 " + "QUFBQQ==" + " short"],
    ["ssh-rsa " + KEY1.split()[1]],  # an ed25519 blob claiming to be RSA
    ["../../etc/passwd"],
    ["ssh-ed25519 " + "A" * 20000],
    [KEY1.replace("test1@hako", "evil\x1b[31m")],
    [KEY1] * 65,
    [],
]


def test_bad_hash_password_or_key_is_refused_and_creates_nothing(node, tenant):
    def counts():  # (the agent's heartbeats may add node-level jobs meanwhile)
        return VE.objects.count(), Job.objects.filter(kind="create").count(), AuditEvent.objects.count()

    before = counts()
    cases = [{"root_password_hash": h} for h in HOSTILE_HASHES]
    cases += [{"ssh_keys": k} for k in HOSTILE_KEYS]
    cases += [{"root_password": p} for p in ("short", "pass\nword-123", "tab\there-123", "x" * 257, 42)]
    cases += [{"root_password": PASSWORD, "root_password_hash": sha512_crypt(PASSWORD)}]
    for kwargs in cases:
        with pytest.raises(InvalidInput) as e:
            svc.ve_create(tenant=tenant, template="busybox", node=node, **kwargs)
        msg = e.value.message
        assert e.value.field in ("root_password", "root_password_hash", "ssh_keys"), (kwargs, msg)
        assert any(word in msg for word in ("SHA-512", "SSH key", "password", "base64")), (kwargs, msg)
    assert counts() == before


def test_node_refuses_bad_identity_that_got_past_the_panel(stack, node, tenant, monkeypatch):
    """The broker is not trusted: the node checks the hash and keys again."""
    for forged, words in (({"root_password_hash": "$1$weak$hash"}, "SHA-512"),
                          ({"ssh_keys": ['from="*" ssh-ed25519 AAAA']}, "SSH key")):
        monkeypatch.setattr(svc, "identity_args", lambda forged=forged, **_: forged)
        job = job_wait(svc.ve_create(tenant=tenant, template="busybox", node=node), timeout=60)
        assert job.state == "failed" and words in job.explanation, job.explanation
        assert not (stack.node_root / "images" / f"{job.ve.veid}.img").exists()
        assert VE.objects.get(pk=job.ve_id).state == "error"


def test_vztmpl_lists_builds_and_removes_templates(stack, node, debian12):
    wait_for(lambda: "debian-12" in Node.objects.get(pk=node.pk).info.get("templates", []), 15,
             what="the heartbeat to list debian-12")
    out = manage(stack, "vztmpl", "list")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:]}
    assert rows["busybox"] == node.name and rows["debian-12"] == node.name, out.stdout

    # Building a cached template through the pipeline keeps it and makes its golden image.
    out = manage(stack, "vztmpl", "build", "debian-12", "--node", node.name)
    assert out.returncode == 0, out.stderr
    assert "OS template debian-12 is in this node's template cache already" in out.stdout
    assert f"OS template debian-12 is built on node {node.name}" in out.stdout
    job = Job.objects.filter(kind="template_build").latest("created_at")
    assert job.ve is None and job.state == "succeeded" and job.result["golden"].startswith("debian-12.")

    jobs = Job.objects.filter(kind__startswith="template_").count()
    for bad in ("../etc", "no-such-template", "Debian-12", "a b"):
        out = manage(stack, "vztmpl", "build", bad, "--node", node.name)
        assert out.returncode != 0 and ("not valid" in out.stderr or "cannot build" in out.stderr), out.stderr
    assert Job.objects.filter(kind__startswith="template_").count() == jobs

    # Remove and rebuild busybox (seconds): the cache and the heartbeat follow.
    cache = stack.node_root / "templates"
    out = manage(stack, "vztmpl", "remove", "busybox", "--node", node.name)
    assert out.returncode == 0, out.stderr
    assert not (cache / "busybox.tar").exists()
    wait_for(lambda: "busybox" not in Node.objects.get(pk=node.pk).info.get("templates", []), 10,
             what="the heartbeat to drop busybox")
    out = manage(stack, "vztmpl", "build", "busybox", "--node", node.name)
    assert out.returncode == 0, out.stderr
    assert (cache / "busybox.tar").exists()
    wait_for(lambda: "busybox" in Node.objects.get(pk=node.pk).info.get("templates", []), 10,
             what="the heartbeat to list busybox again")
    assert {r["name"] for r in tsvc.template_list()} >= {"busybox", "debian-12"}
