#!/usr/bin/env bash
# The embedded default ("make run"): one host runs the panel (uvicorn, ASGI), the panel
# Celery worker, beat and the local node agent, in the foreground until Ctrl-C.
# Every process gets its own session (setsid), so Ctrl-C reaches only this script and
# the containers the agent starts are never in our process group. On exit we stop the
# four Hako processes by PID and never touch an LXC container: VEs outlive the panel.
set -euo pipefail
cd "$(dirname "$0")/.."

export HAKO_DATA=${HAKO_DATA:-/var/lib/hako}
export HAKO_DATABASE_URL=${HAKO_DATABASE_URL:-sqlite:///$HAKO_DATA/panel.sqlite3}
export HAKO_BROKER_URL=${HAKO_BROKER_URL:-redis://127.0.0.1:6379/0}
export DJANGO_SETTINGS_MODULE=panel.settings
export HAKO_NODE_NAME=${HAKO_NODE_NAME:-$(hostname -s 2>/dev/null || uname -n)}
export HAKO_BIND=${HAKO_BIND:-127.0.0.1:8000}

LOG_DIR=$HAKO_DATA/log
AGENT_ENV=$HAKO_DATA/node-$HAKO_NODE_NAME.env
PY=.venv/bin/python
# 0711: the VEs' unprivileged roots must traverse to their node root below (LXC refuses
# to start otherwise); nobody may list it. What is inside and secret is 0600/0700 itself.
[ -d "$HAKO_DATA" ] || install -d "$HAKO_DATA"
chmod 0711 "$HAKO_DATA"
install -d -m 0700 "$LOG_DIR"
chmod 0700 "$LOG_DIR"
for f in "$HAKO_DATA"/panel.sqlite3* "$HAKO_DATA"/celerybeat-schedule*; do
    [ -e "$f" ] && chmod 0600 "$f"
done

say() { printf '[run] %s\n' "$*"; }

declare -A NAME_OF=()   # pid -> name
PIDS=()

alive() {   # running and not a zombie waiting to be reaped
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

stopping=0
stop_all() {
    [ "$stopping" -eq 1 ] && return
    stopping=1
    trap '' INT TERM
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    say "stopping ${#PIDS[@]} Hako processes (containers keep running)"
    local pid left
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        left=0
        for pid in "${PIDS[@]}"; do alive "$pid" && left=1; done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then
            say "${NAME_OF[$pid]} (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    say "stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

started() {   # name pid log
    PIDS+=("$2")
    NAME_OF[$2]=$1
    say "started $1 (pid $2), log $3"
}

say "node $HAKO_NODE_NAME, data $HAKO_DATA"
say "migrating the database"
# umask 077: a new SQLite database is born 0600 (its -wal and -shm files follow its mode).
(umask 077; "$PY" manage.py migrate --noinput) >"$LOG_DIR/migrate.log" 2>&1 \
    || { cat "$LOG_DIR/migrate.log" >&2; exit 1; }
"$PY" manage.py hako_bootstrap --node "$HAKO_NODE_NAME" --agent-env "$AGENT_ENV" \
    --node-root "$HAKO_DATA/node-$HAKO_NODE_NAME"
[ -r "$AGENT_ENV" ] || { say "hako_bootstrap did not write $AGENT_ENV" >&2; exit 1; }

# Each process: own session, stdin from /dev/null, its own log. In a non-interactive
# script a background child is not a group leader, so setsid execs in place and $! is
# the real PID of the process.
log=$LOG_DIR/web.log
# uvicorn on the ASGI app: the panel's pages and the VE console's WebSocket on one port.
bind_host=${HAKO_BIND%:*}; bind_host=${bind_host#[}; bind_host=${bind_host%]}
setsid .venv/bin/uvicorn panel.asgi:application --host "$bind_host" --port "${HAKO_BIND##*:}" \
    --workers 2 </dev/null >>"$log" 2>&1 &
started web $! "$log"

log=$LOG_DIR/worker.log
setsid .venv/bin/celery -A panel worker -Q panel -n 'panel@%h' --pool prefork -c 2 \
    --prefetch-multiplier 1 --without-gossip --without-mingle -l info \
    </dev/null >>"$log" 2>&1 &
started worker $! "$log"

log=$LOG_DIR/beat.log
setsid .venv/bin/celery -A panel beat -l info -s "$HAKO_DATA/celerybeat-schedule" \
    </dev/null >>"$log" 2>&1 &
started beat $! "$log"

# The agent gets its key and settings from the env file hako_bootstrap wrote; the
# subshell keeps them out of the other processes' environment.
log=$LOG_DIR/agent-$HAKO_NODE_NAME.log
(
    set -a
    # shellcheck disable=SC1090
    . "$AGENT_ENV"
    set +a
    exec setsid "$PY" -m containers.agent
) </dev/null >>"$log" 2>&1 &
started "agent $HAKO_NODE_NAME" $! "$log"

say "panel listening on http://$HAKO_BIND/  logs in $LOG_DIR/  (Ctrl-C stops Hako, not the VEs)"

# Run until Ctrl-C; if one process dies on its own, stop the others and say which.
while :; do
    rc=0
    wait -n || rc=$?
    for pid in "${PIDS[@]}"; do
        if ! alive "$pid"; then
            say "${NAME_OF[$pid]} (pid $pid) exited (status $rc), see $LOG_DIR/" >&2
            stop_all
            exit 1
        fi
    done
done
