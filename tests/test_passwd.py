"""Setting the root password of an existing VE (issue 6): ``ve_set_password`` -> a
``passwd`` job -> ``chpasswd -e`` inside a running VE, or an edit of /etc/shadow in a
stopped VE's image. Only the hash travels, and the finished job no longer holds it."""
import os

import pytest
from django.urls import reverse

from containers.identity import IdentityError, set_root_password
from panel.models import VE, AuditEvent, Job
from panel.services import ves as svc
from panel.services.errors import Forbidden, InvalidInput
from panel.services.identity import sha512_crypt
from tests.conftest import run
from tests.tenancy import idle_node, people, settle  # noqa: F401

PASSWORD = "n3w root pass!"
HOSTILE = ["short", "", "line\nbreak-here", "nul\x00byte-here", "tab\there-too", "x" * 257, None, 12345678]


def shadow_root_line(ve) -> str:
    out = run(svc.ve_exec(ve=ve, argv=["grep", "^root:", "/etc/shadow"])).result
    assert out["exit_code"] == 0, out
    return out["output"].strip()


def assert_hash_of(line: str, password: str) -> None:
    stored = line.split(":")[1]
    assert stored.startswith("$6$"), line
    salt = stored.split("$")[2]
    assert stored == sha512_crypt(password, salt), "the VE's shadow holds the hash of the new password"


def assert_scrubbed(job: Job) -> None:
    job.refresh_from_db()
    assert "root_password_hash" not in job.args and "$6$" not in str(job.args)
    assert all("$6$" not in line.message for line in job.logs.all()), "the hash is never logged"


@pytest.mark.integration
def test_it_sets_the_root_password_of_a_running_ve(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="pw1")).ve_id)
    run(svc.ve_start(ve=ve))
    job = run(svc.ve_set_password(ve=ve, root_password=PASSWORD))
    assert "Set root password" in [line.message for line in job.logs.all()]
    assert_hash_of(shadow_root_line(ve), PASSWORD)
    assert_scrubbed(job)
    ve.refresh_from_db()
    assert ve.state == "running"
    event = AuditEvent.objects.get(action="ve.passwd")
    assert event.detail["root_password"] == "set" and "$6$" not in str(event.detail)


@pytest.mark.integration
def test_it_sets_the_root_password_of_a_stopped_ve(stack, node, tenant):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="pw2")).ve_id)
    job = run(svc.ve_set_password(ve=ve, root_password=PASSWORD))
    assert "Set root password" in [line.message for line in job.logs.all()]
    assert_scrubbed(job)
    ve.refresh_from_db()
    assert ve.state == "stopped"
    assert not os.path.ismount(stack.node_root / "mnt" / str(ve.veid)), "the image is unmounted again"
    run(svc.ve_start(ve=ve))
    assert_hash_of(shadow_root_line(ve), PASSWORD)
    # Once more while it runs: the newer password wins.
    run(svc.ve_set_password(ve=ve, root_password=PASSWORD + "2"))
    assert_hash_of(shadow_root_line(ve), PASSWORD + "2")


@pytest.mark.django_db
def test_hostile_passwords_are_refused_with_nothing_queued(idle_node, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="pw3"))
    before = Job.objects.count()
    for value in HOSTILE:
        with pytest.raises(InvalidInput) as e:
            svc.ve_set_password(ve=ve, root_password=value)
        assert e.value.field == "root_password", repr(value)
    assert Job.objects.count() == before
    assert not AuditEvent.objects.filter(action="ve.passwd").exists()


@pytest.mark.django_db
def test_a_viewer_cannot_set_the_password(idle_node, people, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="pw4"))
    with pytest.raises(Forbidden):
        svc.ve_set_password(ve=ve, actor=people.viewer, root_password=PASSWORD)
    assert not Job.objects.filter(kind="passwd").exists()
    job = svc.ve_set_password(ve=ve, actor=people.operator, root_password=PASSWORD)
    assert job.kind == "passwd" and job.mutating and job.args["root_password_hash"].startswith("$6$")


@pytest.mark.django_db
def test_the_job_forgets_the_hash_when_it_ends_any_way(idle_node, tenant):
    from panel.services.jobs import job_cancel, job_fail

    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="pw5"))
    job = svc.ve_set_password(ve=ve, root_password=PASSWORD)
    assert job_cancel(job=job)
    assert_scrubbed(job)
    job = svc.ve_set_password(ve=ve, root_password=PASSWORD)
    assert job_fail(job.pk, error="node-lost", explanation="the node went away")
    assert_scrubbed(job)


# --- the VE page ---------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_ve_page_sets_the_password_for_operators_only(client, idle_node, people, tenant, other_tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="pw6"))
    url = reverse("panel:ve-password", kwargs={"ve_id": ve.pk})
    detail = reverse("panel:ve-detail", kwargs={"ve_id": ve.pk})
    data = {"root_password": PASSWORD, "root_password_confirm": PASSWORD}

    client.force_login(people.viewer)
    assert url not in client.get(detail).content.decode(), "a viewer sees no password form"
    r = client.post(url, data)
    assert r.status_code == 403
    client.force_login(people.outsider)
    assert client.post(url, data).status_code == 404
    assert not Job.objects.filter(kind="passwd").exists()

    client.force_login(people.operator)
    html = client.get(detail).content.decode()
    assert url in html and 'autocomplete="new-password"' in html
    r = client.post(url, {"root_password": PASSWORD, "root_password_confirm": PASSWORD + "x"})
    assert r.status_code == 400 and 'id="id_pw_root_password_confirm_error"' in r.content.decode()
    for value in ("short", "line\nbreak-here", "nul\x00byte-here"):
        r = client.post(url, {"root_password": value, "root_password_confirm": value})
        assert r.status_code == 400, repr(value)
        assert PASSWORD not in r.content.decode()
    assert not Job.objects.filter(kind="passwd").exists()
    r = client.post(url, data)
    assert r.status_code == 302
    job = Job.objects.get(kind="passwd", ve=ve)
    assert job.actor == people.operator
    assert PASSWORD not in client.get(detail).content.decode()


@pytest.mark.django_db
def test_the_password_form_is_in_japanese(client, idle_node, people, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", hostname="pw7"))
    client.force_login(people.operator)
    html = client.get(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "root パスワードを設定" in html and "新しい root パスワード" in html


# --- node side: the shadow edit on a stopped VE's tree ---------------------------------------

def make_tree(tmp_path):
    root = tmp_path / "ve"
    (root / "etc").mkdir(parents=True)
    (root / "etc/shadow").write_text("daemon:*:19000:0:99999:7:::\nroot:*:19000:0:99999:7:::\nbin:*:1::::::\n")
    os.chmod(root / "etc/shadow", 0o640)
    return root


def test_set_root_password_replaces_only_roots_line(tmp_path):
    root = make_tree(tmp_path)
    h = sha512_crypt(PASSWORD, "saltsalt")
    set_root_password(root, h)
    lines = (root / "etc/shadow").read_text().splitlines()
    assert lines[0] == "daemon:*:19000:0:99999:7:::" and lines[2] == "bin:*:1::::::"
    assert lines[1].startswith(f"root:{h}:") and lines[1].endswith(":0:99999:7:::")
    assert oct((root / "etc/shadow").stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["shadow"], "no temp file left"


def test_set_root_password_refuses_symlinks(tmp_path):
    host_file = tmp_path / "host-shadow"
    host_file.write_text("root:x:1::::::\n")
    root = make_tree(tmp_path)
    (root / "etc/shadow").unlink()
    (root / "etc/shadow").symlink_to(host_file)
    with pytest.raises(IdentityError):
        set_root_password(root, sha512_crypt(PASSWORD, "saltsalt"))
    assert host_file.read_text() == "root:x:1::::::\n"

    other = tmp_path / "other"
    other.mkdir()
    (other / "etc").symlink_to(tmp_path)
    (tmp_path / "shadow").write_text("root:x:1::::::\n")
    with pytest.raises(IdentityError):
        set_root_password(other, sha512_crypt(PASSWORD, "saltsalt"))
    assert (tmp_path / "shadow").read_text() == "root:x:1::::::\n"


@pytest.mark.integration
def test_a_running_debian_ve_changes_it_with_chpasswd(stack, node, tenant, debian12):
    from panel.models import OSTemplate

    OSTemplate.objects.get_or_create(name=debian12)
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template=debian12, hostname="pwdeb", node=node,
                                             memory=512 << 20), timeout=300).ve_id)
    run(svc.ve_start(ve=ve), timeout=120)
    # chpasswd itself, not the host-side fallback: the VE's own tools wrote the line.
    assert run(svc.ve_exec(ve=ve, argv=["sh", "-c", "command -v chpasswd"])).result["exit_code"] == 0
    job = run(svc.ve_set_password(ve=ve, root_password=PASSWORD))
    assert_scrubbed(job)
    assert_hash_of(shadow_root_line(ve), PASSWORD)


def test_the_node_refuses_a_passwd_job_without_a_proper_hash():
    from containers.messages import MessageError, check_passwd_args

    good = sha512_crypt(PASSWORD, "saltsalt")
    assert check_passwd_args({"root_password_hash": good}) == good
    for args in ({}, {"root_password_hash": "plain"}, {"root_password_hash": good + "\nroot2::0:::::"},
                 {"root_password_hash": good.replace("$6$", "$1$")}, {"root_password_hash": None},
                 {"root_password_hash": good, "extra": 1}):
        with pytest.raises(MessageError):
            check_passwd_args(args)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_vzctl_set_userpasswd(stack, node, tenant):
    from tests.test_cli import manage

    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox", hostname="pwcli")).ve_id)
    out = manage(stack, "vzctl", "set", str(ve.veid), "--userpasswd", f"root:{PASSWORD}")
    assert out.returncode == 0, out.stderr
    assert "Set root password" in out.stdout and "$6$" not in out.stdout
    assert [j.kind for j in Job.objects.filter(ve=ve).order_by("created_at")] == ["create", "passwd"]
    for bad in ("admin:whatever-long", "root", "root:short"):
        out = manage(stack, "vzctl", "set", str(ve.veid), "--userpasswd", bad)
        assert out.returncode != 0, bad
    assert Job.objects.filter(ve=ve).count() == 2
    run(svc.ve_start(ve=ve))
    assert_hash_of(shadow_root_line(ve), PASSWORD)
