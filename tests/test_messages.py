"""The broker envelope: signatures, expiry and the node's re-validation of every field."""
import secrets
import time
import uuid

import pytest

from containers import messages as m

KEY = secrets.token_bytes(32)


def spec(**kw):
    base = {"veid": 101, "hostname": "web1", "template": "busybox", "memory": 256 << 20, "swap": 0,
            "disk": 1 << 30, "cpuunits": 1000, "cpulimit": 0, "numproc": 512, "uid_base": 1000000}
    base.update(kw)
    return base


def body(**kw):
    b = m.job_body(job_id=str(uuid.uuid4()), node="n1", op="start", veid=101, generation=3, spec=spec())
    b.update(kw)
    return b


def test_a_signed_job_opens_and_validates():
    job = m.JobMessage.from_body(m.open_envelope(m.sign(body(), KEY), KEY), node="n1")
    assert job.op == "start" and job.spec.hostname == "web1" and job.generation == 3


@pytest.mark.parametrize("tamper", [
    lambda e: e["body"].update(op="destroy"),
    lambda e: e["body"]["spec"].update(uid_base=0),
    lambda e: e.update(sig="0" * 64),
    lambda e: e.update(v=2),
    lambda e: e.pop("sig"),
])
def test_any_change_breaks_the_signature(tamper):
    env = m.sign(body(), KEY)
    tamper(env)
    with pytest.raises(m.MessageError):
        m.open_envelope(env, KEY)


def test_another_key_is_refused():
    with pytest.raises(m.MessageError, match="bad signature"):
        m.open_envelope(m.sign(body(), KEY), secrets.token_bytes(32))


@pytest.mark.parametrize("changes,reason", [
    ({"node": "n2"}, "not 'n1'"),
    ({"expires_at": time.time() - 5}, "expired"),
    ({"issued_at": time.time() + 3600}, "future"),
    ({"op": "rm -rf"}, "unknown operation"),
    ({"job_id": "../../etc"}, "bad job id"),
    ({"veid": "101"}, "bad veid"),
    ({"generation": -1}, "bad generation"),
    ({"spec": spec(hostname="a;b")}, "hostname"),
    ({"spec": spec(hostname="a\nlxc.include = /etc/x")}, "hostname"),
    ({"spec": spec(template="../../x")}, "template"),
    ({"spec": spec(memory=True)}, "memory"),
    ({"spec": spec(uid_base=0)}, "uid_base"),
    ({"spec": spec(veid=102)}, "does not match"),
    ({"spec": {**spec(), "lxc.raw": "x"}}, "unknown spec fields"),
    ({"spec": None}, "needs a spec"),
    ({"args": []}, "args"),
])
def test_the_node_revalidates_every_field(changes, reason):
    with pytest.raises(m.MessageError, match=reason):
        m.JobMessage.from_body(body(**changes), node="n1")
