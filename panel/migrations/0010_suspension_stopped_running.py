from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("panel", "0009_usage_samples")]

    operations = [
        migrations.AddField(
            model_name="suspension",
            name="stopped_running",
            field=models.BooleanField(default=False),
        ),
    ]
