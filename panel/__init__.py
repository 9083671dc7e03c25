"""Hako's panel: the Django project (models, services, views, API, Celery bookkeeping)."""
from .celery import app as celery_app

__all__ = ("celery_app",)
