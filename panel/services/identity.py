"""A new VE's login identity as the customer gives it: a root password or SSH keys.

The clear password never leaves this process: it is hashed here (SHA-512 crypt, ``$6$``,
what Debian's /etc/shadow takes) and only the hash goes into the create job's ``args``,
never into the VE row or its spec. The node checks hash and keys again with the same
functions (containers.messages) before writing them into the VE.
"""
from __future__ import annotations

import hashlib

from passlib.hash import sha512_crypt as sha512_crypt_hasher

from django.utils.translation import gettext as _

from containers.messages import MessageError, check_password_hash, check_ssh_key, SSH_KEYS_MAX

from .errors import InvalidInput

PASSWORD_MIN, PASSWORD_MAX = 8, 256


def sha512_crypt(password: str, salt: str | None = None, rounds: int = 5000) -> str:
    """glibc's ``$6$`` password hash (what Debian's /etc/shadow takes), via libpass: the
    ``crypt`` module is deprecated and gone in Python 3.13. 5000 rounds is glibc's default
    and what ``passwd`` writes."""
    hasher = sha512_crypt_hasher.using(rounds=rounds, **({"salt": salt} if salt is not None else {}))
    return hasher.hash(password)


def check_password(value) -> str:
    if not isinstance(value, str):
        raise InvalidInput(_("root password must be text"), field="root_password")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise InvalidInput(_("root password must be %(min)d to %(max)d characters long")
                           % {"min": PASSWORD_MIN, "max": PASSWORD_MAX}, field="root_password")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(_("root password must not contain control characters (newline, tab, NUL)"),
                           field="root_password")
    return value


def parse_ssh_keys(value) -> list[str]:
    """Keys as a list or as authorized_keys text (one per line; blank and # lines skipped)."""
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput(_("give SSH keys as OpenSSH public key lines"), field="ssh_keys")
    if len(value) > SSH_KEYS_MAX:
        raise InvalidInput(_("at most %(max)d SSH keys") % {"max": SSH_KEYS_MAX}, field="ssh_keys")
    out = []
    for i, key in enumerate(value, 1):
        try:
            out.append(check_ssh_key(key))
        except MessageError as e:
            raise InvalidInput(_("SSH key %(number)d: %(error)s") % {"number": i, "error": e},
                               field="ssh_keys") from None
    return out


def identity_args(*, root_password=None, root_password_hash=None, ssh_keys=None) -> dict:
    """Validated job args for a create job's identity (none of them is required)."""
    if root_password is not None and root_password_hash is not None:
        raise InvalidInput(_("give either a root password or its hash, not both"), field="root_password")
    args = {}
    if root_password is not None:
        args["root_password_hash"] = sha512_crypt(check_password(root_password))
    elif root_password_hash is not None:
        try:
            args["root_password_hash"] = check_password_hash(root_password_hash)
        except MessageError as e:
            raise InvalidInput(str(e), field="root_password_hash") from None
    if ssh_keys is not None:
        args["ssh_keys"] = parse_ssh_keys(ssh_keys)
    return args


def identity_audit(args: dict) -> dict:
    """What the audit record says about an identity: never the hash, only that it was set."""
    out = {}
    if args.get("root_password_hash"):
        out["root_password"] = "set"
    if args.get("ssh_keys"):
        out["ssh_keys"] = [k.split()[0] + " " + hashlib.sha256(k.split()[1].encode()).hexdigest()[:16]
                           for k in args["ssh_keys"]]
    return out
