"""The embedded default runs on SQLite with several writers (web, panel worker, beat):
WAL, a busy timeout and IMMEDIATE transactions must let them all through."""
import os
import sqlite3
import subprocess
import sys

from tests.harness import REPO


def test_sqlite_survives_concurrent_writers(tmp_path):
    db = tmp_path / "panel.sqlite3"
    env = {**os.environ, "HAKO_DATABASE_URL": f"sqlite:///{db}", "HAKO_DATA": str(tmp_path), "PYTHONPATH": str(REPO),
           "DJANGO_SETTINGS_MODULE": "panel.settings"}
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    subprocess.run([py, "manage.py", "shell", "-c",
                    "from panel.models import Tenant, Node\n"
                    "from panel.services.nodes import node_register\n"
                    "n = node_register(name='sqlite-smoke'); Node.objects.filter(pk=n.pk).update(state='online')\n"
                    "Tenant.objects.create(slug='smoke', name='Smoke')"],
                   cwd=REPO, env=env, check=True, timeout=120, capture_output=True)
    writers = [("web", 40), ("web", 40), ("worker", 150), ("beat", 150)]
    procs = [subprocess.Popen([py, "tests/sqlite_writer.py", role, str(n)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for role, n in writers]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for (role, _), p, out in zip(writers, procs, outputs):
        assert p.returncode == 0, f"{role} failed:\n{out[-3000:]}"
        assert "database is locked" not in out
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM panel_ve").fetchone()[0] == 80
    assert con.execute("SELECT count(DISTINCT veid) FROM panel_ve").fetchone()[0] == 80
    assert con.execute("SELECT count(DISTINCT uid_base) FROM panel_ve").fetchone()[0] == 80
    assert con.execute("SELECT count(*) FROM panel_job WHERE kind='create'").fetchone()[0] == 80
    assert con.execute("SELECT count(*) FROM panel_auditevent WHERE action='ve.create'").fetchone()[0] == 80
