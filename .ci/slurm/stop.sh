#!/usr/bin/env bash
# Stop the cluster that start.sh started: end exactly the PIDs it recorded, newest first.
#
# Each daemon gets SIGTERM, then SIGKILL if it is still running after 15 s. Then the
# /etc/slurm/slurm.conf symlink that start.sh created is removed. Safe to run when nothing is
# running or start.sh failed halfway. The state directory is kept for its logs.
set -uo pipefail

STATE="${HELPNET_SLURM_STATE:-/tmp/helpnet-slurm}"
PIDS="$STATE/pids"

is_running() {
    # A recorded PID that now belongs to another program (reused after the daemon died) must
    # not be killed, so the program name is checked too.
    local name=$1 pid=$2
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

stop_daemon() {
    local name=$1 pid=$2
    if ! is_running "$name" "$pid"; then
        echo "slurm stop: $name (pid $pid) is not running"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
        is_running "$name" "$pid" || break
        sleep 0.2
    done
    if is_running "$name" "$pid"; then
        echo "slurm stop: $name (pid $pid) ignored SIGTERM for 15 s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "slurm stop: stopped $name (pid $pid)"
}

if [ -s "$PIDS" ]; then
    # Reverse start order: slurmd and slurmctld first, MariaDB and munged last, so no daemon
    # loses a service it is still talking to.
    mapfile -t entries < <(tac "$PIDS")
    for entry in "${entries[@]}"; do
        read -r name pid <<<"$entry"
        stop_daemon "$name" "$pid"
    done
    : >"$PIDS"
else
    echo "slurm stop: no PIDs recorded in $PIDS"
fi

# Remove only the symlinks start.sh created, and only while they still point into $STATE.
if [ -s "$STATE/created_symlinks" ]; then
    while read -r link; do
        if [ -L "$link" ] && [[ "$(readlink "$link")" == "$STATE"/* ]]; then
            rm -f "$link"
            echo "slurm stop: removed $link"
        fi
    done <"$STATE/created_symlinks"
    : >"$STATE/created_symlinks"
fi
