"""Issue 9: VE migration between nodes (Migration), node maintenance mode, the migrating VE state."""
import django.db.models.deletion
import uuid
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('panel', '0007_console_sessions'),
    ]

    operations = [
        migrations.AddField(
            model_name='node',
            name='maintenance',
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name='ve',
            name='state',
            field=models.CharField(choices=[('creating', 'Creating'), ('stopped', 'Stopped'), ('starting', 'Starting'), ('running', 'Running'), ('stopping', 'Stopping'), ('error', 'Error'), ('unknown', 'Unknown'), ('migrating', 'Migrating'), ('destroyed', 'Destroyed')], default='creating', max_length=16),
        ),
        migrations.CreateModel(
            name='Migration',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('state', models.CharField(choices=[('pending', 'Pending'), ('preparing', 'Preparing'), ('precopy', 'Precopy'), ('final', 'Final'), ('starting', 'Starting'), ('committed', 'Committed'), ('done', 'Done'), ('rolling_back', 'Rolling Back'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('was_running', models.BooleanField(default=False)),
                ('bwlimit', models.PositiveIntegerField(default=0, help_text='KiB/s for the copy, 0 = unlimited')),
                ('sealed_source', models.CharField(blank=True, max_length=600)),
                ('sealed_target', models.CharField(blank=True, max_length=600)),
                ('endpoint', models.JSONField(blank=True, default=dict)),
                ('bytes_copied', models.BigIntegerField(default=0)),
                ('downtime_ms', models.BigIntegerField(blank=True, null=True)),
                ('error', models.CharField(blank=True, max_length=64)),
                ('explanation', models.TextField(blank=True)),
                ('lease_until', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('drain', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='drained', to='panel.job')),
                ('job', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='migration', to='panel.job')),
                ('source', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='migrations_out', to='panel.node')),
                ('target', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='migrations_in', to='panel.node')),
                ('ve', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='migrations', to='panel.ve')),
            ],
            options={
                'ordering': ['-created_at'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('state__in', ['pending', 'preparing', 'precopy', 'final', 'starting', 'committed', 'rolling_back'])), fields=('ve',), name='one_active_migration_per_ve')],
            },
        ),
    ]
