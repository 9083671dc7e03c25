import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("panel", "0008_migration_and_maintenance")]

    operations = [
        migrations.AddField(
            model_name="usagemark",
            name="meters",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.CreateModel(
            name="UsageSample",
            fields=[
                ("ve", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                            related_name="usage_sample", serialize=False, to="panel.ve")),
                ("totals", models.JSONField(blank=True, default=dict)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
    ]
