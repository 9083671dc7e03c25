"""Prepare the embedded default: an admin user, the local node and its agent's env file."""
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from panel.models import IPPool, Membership, Tenant
from panel.services.network import pool_create
from panel.services.nodes import agent_env, node_register


class Command(BaseCommand):
    help = "Create the admin user, a default tenant and the local node; write the agent's env file."

    def add_arguments(self, parser):
        parser.add_argument("--node", required=True)
        parser.add_argument("--agent-env", dest="env_file", required=True, help="where to write the node agent's environment")
        parser.add_argument("--node-root", default=None)
        parser.add_argument("--admin", default="admin")
        parser.add_argument("--demo-pool", default="198.18.0.0/24,fd00:4861:6b6f::/64",
                            help="pools routed only inside this machine for the local node ('' for none)")

    def handle(self, *args, node, env_file, node_root, admin, demo_pool, **opts):
        User = get_user_model()
        with transaction.atomic():
            n = node_register(name=node)
            tenant, _ = Tenant.objects.get_or_create(slug="default", defaults={"name": "Default tenant"})
            user = User.objects.filter(username=admin).first()
            password = None
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_superuser(admin, f"{admin}@localhost", password)
            Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Membership.Role.OWNER})
            if demo_pool and not IPPool.objects.exists():
                # A demo pool from the benchmarking range (198.18.0.0/15) and ULA IPv6: the
                # node installs unreachable routes for them, so nothing leaves the machine.
                for i, cidr in enumerate(c for c in demo_pool.split(",") if c):
                    pool_create(name=f"demo{i + 1}", network=cidr, nodes=[n])
        path = Path(env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(agent_env(n, settings.CELERY_BROKER_URL, node_root))
        if password:
            self.stdout.write(f"Admin user: {admin}  password: {password}")
        else:
            self.stdout.write(f"Admin user: {admin} (exists; reset with: manage.py changepassword {admin})")
        self.stdout.write(f"Node {n.name}: agent environment in {path}")

