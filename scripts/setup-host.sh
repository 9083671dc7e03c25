#!/usr/bin/env bash
# Prepare this host for Hako: system packages, id ranges, Redis, PostgreSQL, lxcfs and
# the Python venv. Runs as root on a fresh Debian 12 and is idempotent: a second run
# changes nothing and takes about a second. No systemd as PID 1 is assumed, so the
# services are started directly.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="lxc lxcfs uidmap busybox-static e2fsprogs xfsprogs rsync python3-venv python3-dev gcc
redis-server postgresql postgresql-client iproute2 nftables procps psmisc util-linux debootstrap openssh-client
chromium chromium-driver make git ca-certificates gettext fonts-ipafont-gothic"
SUBID_START=1000000
SUBID_COUNT=1000000000
LXCFS_DIR=/var/lib/lxcfs

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# --- packages -------------------------------------------------------------------------
missing=()
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [ "${status:0:2}" = "ii" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "packages: all present"
fi

# --- subordinate id ranges (merged, never appended blindly) ---------------------------
merge_subid() {
    local file=$1
    touch "$file"
    if awk -F: -v s="$SUBID_START" -v c="$SUBID_COUNT" '
            $1 == "root" && $2 + 0 <= s + 0 && $2 + $3 >= s + c { found = 1 }
            END { exit !found }' "$file"; then
        say "$file: root:$SUBID_START:$SUBID_COUNT already covered"
        return
    fi
    # The file may lack a trailing newline; never glue our line onto the last one.
    if [ -s "$file" ] && [ "$(tail -c1 "$file" | od -An -c | tr -d ' ')" != '\n' ]; then
        printf '\n' >>"$file"
    fi
    printf 'root:%s:%s\n' "$SUBID_START" "$SUBID_COUNT" >>"$file"
    say "$file: added root:$SUBID_START:$SUBID_COUNT"
}
merge_subid /etc/subuid
merge_subid /etc/subgid

# --- Redis ----------------------------------------------------------------------------
if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    say "redis: running"
else
    say "redis: starting"
    install -d /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 \
        || die "redis did not answer within 10 s (see /var/log/redis/ci.log)"
fi

# --- PostgreSQL -----------------------------------------------------------------------
pg_ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$pg_ver" ]; then
    pg_ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    say "postgresql: creating cluster $pg_ver/main"
    pg_createcluster "$pg_ver" main
fi
pg_hba=/etc/postgresql/$pg_ver/main/pg_hba.conf

pg_wait() {
    for _ in $(seq 60); do
        pg_isready -q -h 127.0.0.1 && return 0
        sleep 0.5
    done
    die "postgresql $pg_ver/main not ready within 30 s (see /var/log/postgresql/)"
}
pg_trust_ok() {
    PGCONNECT_TIMEOUT=5 psql -w -X -q -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' \
        >/dev/null 2>&1
}

if pg_isready -q -h 127.0.0.1; then
    say "postgresql: running"
else
    say "postgresql: starting $pg_ver/main"
    pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main start
    pg_wait
fi
if ! pg_trust_ok; then
    say "postgresql: trusting local TCP connections in $pg_hba"
    grep -q '^host all all 127.0.0.1/32 trust' "$pg_hba" \
        && die "psql -h 127.0.0.1 -U postgres fails although $pg_hba trusts 127.0.0.1"
    tmp=$(mktemp)
    {
        echo "# added by hako scripts/setup-host.sh: local test access without a password"
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        cat "$pg_hba"
    } >"$tmp"
    cat "$tmp" >"$pg_hba"   # keeps the file's owner and mode
    rm -f "$tmp"
    pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main reload
    pg_wait
    for _ in $(seq 20); do pg_trust_ok && break; sleep 0.5; done
    pg_trust_ok || die "psql -h 127.0.0.1 -U postgres still fails after editing $pg_hba"
fi

# --- lxcfs ----------------------------------------------------------------------------
lxcfs_mounted() { awk -v d="$LXCFS_DIR" '$2 == d { f = 1 } END { exit !f }' /proc/self/mounts; }
# "Running" means the FUSE mount answers: a killed lxcfs leaves its mount behind, and
# every stat of it then fails with "Transport endpoint is not connected".
lxcfs_answers() { lxcfs_mounted && timeout 5 stat "$LXCFS_DIR/proc/meminfo" >/dev/null 2>&1; }
if pgrep -x lxcfs >/dev/null && lxcfs_answers; then
    say "lxcfs: running"
else
    if lxcfs_mounted; then              # stale mount of a dead (or hung) lxcfs
        say "lxcfs: removing the stale mount on $LXCFS_DIR"
        pkill -x lxcfs || true
        umount -l "$LXCFS_DIR" 2>/dev/null || fusermount -uz "$LXCFS_DIR" 2>/dev/null || true
    fi
    install -d "$LXCFS_DIR"             # only now: install's chmod fails on a stale mount
    say "lxcfs: starting on $LXCFS_DIR"
    # lxcfs 5 stays in the foreground whatever its flags: start-stop-daemon forks it into
    # its own session with stdio on /dev/null, so this script never waits on it.
    start-stop-daemon --start --quiet --background --oknodo \
        --pidfile /run/lxcfs.pid --exec "$(command -v lxcfs)" -- "$LXCFS_DIR" || true
    for _ in $(seq 25); do lxcfs_mounted && break; sleep 0.2; done
    lxcfs_mounted || echo "[setup] WARNING: lxcfs did not mount $LXCFS_DIR (no /dev/fuse?):" \
        "VEs will see the host's /proc/meminfo" >&2
fi

# --- Python venv ----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "venv: creating .venv with /usr/bin/python3"
    /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.requirements.stamp
if [ ! -e "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-test.txt -nt "$stamp" ]; then
    say "venv: pip install -r requirements-test.txt (includes requirements.txt)"
    .venv/bin/pip install -q -r requirements-test.txt
    touch "$stamp"
else
    say "venv: requirements up to date"
fi

say "done"
