"""Shared pieces of the OpenVZ-style commands (vzctl, vzlist)."""
import getpass

from panel.models import VE
from panel.services.errors import NotFound


def cli_source() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def ve_by_veid(veid: str) -> VE:
    if not str(veid).isdigit():
        raise NotFound(f"VEID must be a number, got {str(veid)[:20]!r}")
    ve = (VE.objects.select_related("node", "tenant", "template")
          .exclude(state=VE.State.DESTROYED).filter(veid=int(veid)).first())
    if ve is None:
        raise NotFound(f"VE {veid} does not exist")
    return ve
