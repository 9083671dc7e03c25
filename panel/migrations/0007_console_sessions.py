import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("panel", "0006_customer_tokens_and_login_links"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ConsoleSession",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("actor_label", models.CharField(blank=True, max_length=150)),
                ("kind", models.CharField(choices=[("shell", "Shell"), ("tty", "Tty")], default="shell",
                                          max_length=8)),
                ("source", models.CharField(blank=True, max_length=16)),
                ("started_at", models.DateTimeField(auto_now_add=True)),
                ("last_seen_at", models.DateTimeField(auto_now_add=True)),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("bytes_in", models.BigIntegerField(default=0)),
                ("bytes_out", models.BigIntegerField(default=0)),
                ("exit_code", models.IntegerField(blank=True, null=True)),
                ("close_reason", models.CharField(blank=True, max_length=32)),
                ("user", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                           to=settings.AUTH_USER_MODEL)),
                ("ve", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                         related_name="console_sessions", to="panel.ve")),
            ],
            options={
                "ordering": ["-started_at"],
                "indexes": [models.Index(fields=["ve", "ended_at"], name="console_ve_open"),
                            models.Index(fields=["user", "ended_at"], name="console_user_open")],
            },
        ),
    ]
