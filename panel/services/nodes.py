"""Node registration: a node is a row with a queue and a key its agent signs with."""
from __future__ import annotations

from django.db import transaction

from containers.messages import NODE_NAME_RE, queue_for_node
from panel.models import Node, OSTemplate

from .audit import audit
from .errors import InvalidInput

BUILTIN_TEMPLATES = {"busybox": "BusyBox userland with init, syslogd and crond"}


def node_register(*, name: str, actor=None, source: str = "") -> Node:
    """Register a node (idempotent) and return it; its agent needs ``agent_env(node)``."""
    if not isinstance(name, str) or not NODE_NAME_RE.match(name):
        raise InvalidInput("node name must be a DNS label: lower-case letters, digits and '-'", field="name")
    with transaction.atomic():
        node, created = Node.objects.get_or_create(name=name, defaults={"queue": queue_for_node(name)})
        if created:
            audit(action="node.register", actor=actor, obj=node, source=source, detail={"name": name})
        for tname, desc in BUILTIN_TEMPLATES.items():
            OSTemplate.objects.get_or_create(name=tname, defaults={"description": desc})
    return node


def agent_env(node: Node, broker_url: str, root: str | None = None) -> str:
    """The environment file a node agent runs with (contains the node's secret key)."""
    lines = [f"HAKO_NODE_NAME={node.name}", f"HAKO_NODE_KEY={node.key}", f"HAKO_BROKER_URL={broker_url}"]
    if root:
        lines.append(f"HAKO_NODE_ROOT={root}")
    return "\n".join(lines) + "\n"
