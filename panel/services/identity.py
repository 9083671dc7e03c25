"""A new VE's login identity as the customer gives it: a root password or SSH keys.

The clear password never leaves this process: it is hashed here (SHA-512 crypt, ``$6$``,
what Debian's /etc/shadow takes) and only the hash goes into the create job's ``args``,
never into the VE row or its spec. The node checks hash and keys again with the same
functions (containers.messages) before writing them into the VE.
"""
from __future__ import annotations

import hashlib
import secrets

from containers.messages import MessageError, check_password_hash, check_ssh_key, SSH_KEYS_MAX

from .errors import InvalidInput

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The byte order of SHA-512 crypt's output encoding (Drepper, "Unix crypt using SHA-256
# and SHA-512", step 22).
_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
          (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
          (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]
PASSWORD_MIN, PASSWORD_MAX = 8, 256


def _b64(value: int, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(_B64[value & 0x3F])
        value >>= 6
    return "".join(out)


def sha512_crypt(password: str, salt: str | None = None, rounds: int = 5000) -> str:
    """glibc's ``$6$`` password hash. Pure Python: the ``crypt`` module is deprecated and
    gone in Python 3.13. 5000 rounds is glibc's default and what ``passwd`` writes."""
    pw = password.encode()
    salt = salt if salt is not None else "".join(secrets.choice(_B64) for _ in range(16))
    s = salt.encode()[:16]
    n = len(pw)
    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s)
    i = n
    while i > 64:
        a.update(b)
        i -= 64
    a.update(b[:i])
    i = n
    while i:
        a.update(b if i & 1 else pw)
        i >>= 1
    a = a.digest()
    p = (hashlib.sha512(pw * n).digest() * (n // 64 + 1))[:n]
    sb = (hashlib.sha512(s * (16 + a[0])).digest() * (len(s) // 64 + 1))[:len(s)]
    c = a
    for r in range(rounds):
        h = hashlib.sha512(p if r & 1 else c)
        if r % 3:
            h.update(sb)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    encoded = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in _ORDER) + _b64(c[63], 2)
    prefix = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
    return f"{prefix}{s.decode()}${encoded}"


def check_password(value) -> str:
    if not isinstance(value, str):
        raise InvalidInput("root password must be text", field="root_password")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise InvalidInput(f"root password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long",
                           field="root_password")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput("root password must not contain control characters (newline, tab, NUL)",
                           field="root_password")
    return value


def parse_ssh_keys(value) -> list[str]:
    """Keys as a list or as authorized_keys text (one per line; blank and # lines skipped)."""
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInput("give SSH keys as OpenSSH public key lines", field="ssh_keys")
    if len(value) > SSH_KEYS_MAX:
        raise InvalidInput(f"at most {SSH_KEYS_MAX} SSH keys", field="ssh_keys")
    out = []
    for i, key in enumerate(value, 1):
        try:
            out.append(check_ssh_key(key))
        except MessageError as e:
            raise InvalidInput(f"SSH key {i}: {e}", field="ssh_keys") from None
    return out


def identity_args(*, root_password=None, root_password_hash=None, ssh_keys=None) -> dict:
    """Validated job args for a create job's identity (none of them is required)."""
    if root_password is not None and root_password_hash is not None:
        raise InvalidInput("give either a root password or its hash, not both", field="root_password")
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
