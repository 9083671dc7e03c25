"""The panel's Celery app: the panel worker applies node events and heartbeats (queue
``panel``), and beat runs the reaper. Node agents have their own app in ``containers``."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")

app = Celery("hako-panel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["panel"])
