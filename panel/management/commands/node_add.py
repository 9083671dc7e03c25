"""Register a node and print the environment its agent runs with."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from panel.services.errors import ServiceError
from panel.services.nodes import agent_env, node_register


class Command(BaseCommand):
    help = "Register a node (idempotent) and print its agent's environment (it holds the node's key)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--root", default=None, help="HAKO_NODE_ROOT for the agent")

    def handle(self, *args, name, root, **opts):
        try:
            node = node_register(name=name)
        except ServiceError as e:
            raise CommandError(e.message) from None
        self.stdout.write(agent_env(node, settings.CELERY_BROKER_URL, root), ending="")
