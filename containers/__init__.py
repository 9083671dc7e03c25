"""Hako node agent: runs VEs as unprivileged LXC system containers.

This package never imports Django or ``panel``: the panel and the node meet only in the
task names and message schemas defined in :mod:`containers.messages`.
"""
