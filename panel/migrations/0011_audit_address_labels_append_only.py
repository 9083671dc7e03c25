"""Audit records: the client address of the request that made them, the tenant's label
(slug) kept with the record, plain references to user and tenant (deleting either must
not rewrite history, which SET_NULL did), and a trigger that refuses UPDATE and DELETE
of audit rows in the database itself, not only through the ORM."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# PostgreSQL: a row trigger. TRUNCATE is not refused: only the table's owner may run it,
# and the test suite empties its tables with it.
PG_CREATE = """
CREATE OR REPLACE FUNCTION panel_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER panel_auditevent_append_only BEFORE UPDATE OR DELETE ON panel_auditevent
    FOR EACH ROW EXECUTE FUNCTION panel_auditevent_append_only();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS panel_auditevent_append_only ON panel_auditevent;
DROP FUNCTION IF EXISTS panel_auditevent_append_only();
"""
# SQLite: the same. A later migration that remakes this table (SQLite's way to alter one)
# drops these triggers with the old table and must create them again.
SQLITE_CREATE = [
    "CREATE TRIGGER panel_auditevent_no_update BEFORE UPDATE ON panel_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END",
    "CREATE TRIGGER panel_auditevent_no_delete BEFORE DELETE ON panel_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END",
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS panel_auditevent_no_update",
               "DROP TRIGGER IF EXISTS panel_auditevent_no_delete"]


def create_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_CREATE, params=None)  # no placeholders: "%" is plpgsql
    elif vendor == "sqlite":
        for sql in SQLITE_CREATE:
            schema_editor.execute(sql, params=None)


def drop_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DROP, params=None)
    elif vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql, params=None)


def label_tenants(apps, schema_editor):
    """Existing records get their tenant's slug (before the trigger forbids updates)."""
    AuditEvent = apps.get_model("panel", "AuditEvent")
    Tenant = apps.get_model("panel", "Tenant")
    # The historical model has no append-only manager: a plain queryset update.
    for pk, slug in Tenant.objects.values_list("pk", "slug"):
        AuditEvent.objects.filter(tenant_id=pk).update(tenant_label=slug)


class Migration(migrations.Migration):

    dependencies = [
        ("panel", "0010_suspension_stopped_running"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="client_address",
            field=models.GenericIPAddressField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="tenant_label",
            field=models.CharField(blank=True, max_length=63),
        ),
        migrations.RunPython(label_tenants, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="actor",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.DO_NOTHING, related_name="+",
                                    to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="tenant",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.DO_NOTHING, related_name="+",
                                    to="panel.tenant"),
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
