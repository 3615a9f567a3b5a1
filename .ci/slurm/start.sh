#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting on 127.0.0.1 (after install.sh).
#
# Everything lives in one state directory, $HELPNET_SLURM_STATE (default /tmp/helpnet-slurm):
# configuration, munge key, MariaDB data, spool, logs, two fake GPU devices and the
# file `pids`, one "name pid" line per daemon started here. stop.sh ends exactly those PIDs.
# Outside it, the script creates the symlink /etc/slurm/slurm.conf (client commands, including
# the srun that the Snakemake job step runs inside each job, read that path: the job step drops
# SLURM_CONF from the environment) and the munge socket under /run/munge. stop.sh removes the
# symlink again, because with a slurm.conf but no controller every SLURM client command, and so
# every `snakemake` start with the SLURM plugin installed, waits about 10 s for a timeout.
# Every daemon runs as root in the foreground of a background job (no systemd, no cgroups) and
# binds to 127.0.0.1.
#
# Node: `localhost` at 127.0.0.1 with all CPUs, 90 % of the memory and Gres=gpu:2.
# Partitions: `cpu` (default) and `gpu`, both on that node, so a profile can send GPU rules to a
# different partition than CPU rules.
set -euo pipefail

STATE="${HELPNET_SLURM_STATE:-/tmp/helpnet-slurm}"
CLUSTER=helpnet
ACCOUNT=helpnet
CTLD_PORT="${HELPNET_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${HELPNET_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${HELPNET_SLURM_DBD_PORT:-6819}"
MYSQL_PORT="${HELPNET_SLURM_MYSQL_PORT:-33061}"
# MariaDB listens on 127.0.0.1 only. slurmdbd logs in with a password, as on a real cluster.
DB_PASSWORD=helpnet-local
GPU_COUNT=2

PIDS="$STATE/pids"
SECONDS=0

log() { echo "slurm start: $*"; }

fail() {
    echo "slurm start: $*" >&2
    echo "slurm start: logs are in $STATE/log; stop what was started with .ci/slurm/stop.sh" >&2
    exit 1
}

# Run "$@" until it succeeds, at most $1 seconds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "timed out after ${limit} s waiting for $what"
        fi
        sleep 0.2
    done
}

# Start "$@" as a background job with stdin/stdout/stderr detached and record its PID.
# setsid keeps the daemon out of the caller's process group, so a Ctrl-C in the shell that ran
# start.sh does not reach it. setsid execs without forking because a background job is no
# process group leader, so $! is the daemon's own PID.
start_daemon() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    local pid=$!
    echo "$name $pid" >>"$PIDS"
    log "started $name (pid $pid)"
}

if [ "$(id -u)" != 0 ]; then
    fail "must run as root: munged, slurmd and MariaDB are started as root"
fi
for program in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr; do
    if ! command -v "$program" >/dev/null 2>&1; then
        fail "$program not found; run .ci/slurm/install.sh first"
    fi
done

# The path SLURM's client commands read when SLURM_CONF is unset.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    fail "$SYSTEM_CONF exists; this script would shadow another cluster's configuration. Run .ci/slurm/stop.sh if an earlier start left it, or move it away"
fi

if [ -s "$PIDS" ]; then
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            fail "$name (pid $pid) from an earlier start is still running; run .ci/slurm/stop.sh first"
        fi
    done <"$PIDS"
fi

# A fresh state directory each time: accounting rows and job ids from an earlier cluster would
# confuse tests that read sacct.
rm -rf "$STATE"
mkdir -p "$STATE"/{etc,log,spool/ctld,spool/d,mysql,dev,munge-key}
chmod 755 "$STATE"
chmod 700 "$STATE/munge-key"
: >"$PIDS"

# munge: its own key, but the default socket, because the SLURM 22.05 client commands ignore
# AuthInfo=socket= when they connect to slurmdbd.
MUNGE_SOCKET=/run/munge/munge.socket.2
if [ -S "$MUNGE_SOCKET" ] && munge -n -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
    fail "a munged not started by this script already listens on $MUNGE_SOCKET; stop it first"
fi
mkdir -p "$(dirname "$MUNGE_SOCKET")"
dd if=/dev/urandom of="$STATE/munge-key/munge.key" bs=1024 count=1 status=none
chmod 600 "$STATE/munge-key/munge.key"
start_daemon munged munged --foreground \
    --key-file="$STATE/munge-key/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE/munge-key/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge-key/munged.seed"
wait_for 20 munged test -S "$MUNGE_SOCKET"

# MariaDB for slurmdbd: TCP on 127.0.0.1 only, plus a socket for the setup below.
MYSQL_SOCKET="$STATE/mysql/mysqld.sock"
mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
    || fail "mariadb-install-db failed, see $STATE/log/mariadb-install.log"
start_daemon mariadbd mariadbd --no-defaults --user=root --datadir="$STATE/mysql/data" \
    --socket="$MYSQL_SOCKET" --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
    --pid-file="$STATE/mysql/mariadbd.pid" --log-error="$STATE/log/mariadbd.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --skip-name-resolve
wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" ping
mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# Fake GPUs: gres/gpu needs one character device per GPU, and copies of /dev/null serve.
gpu_files=()
for ((i = 0; i < GPU_COUNT; i++)); do
    mknod -m 666 "$STATE/dev/fakegpu$i" c 1 3
    gpu_files+=("$STATE/dev/fakegpu$i")
done
gpu_file_list=$(IFS=,; echo "${gpu_files[*]}")

cpus=$(nproc)
memory_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)

cat >"$STATE/etc/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Bind every daemon and srun to the node's address (127.0.0.1) instead of 0.0.0.0.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/spool/slurmctld.pid
SlurmdPidFile=$STATE/spool/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No systemd and no cgroup hierarchy to delegate: track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
# Keep sbatch --comment, where the Snakemake plugin names the rule and wildcards of each job.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# Test jobs last seconds, so a cancelled job gets 5 s between SIGTERM and SIGKILL.
KillWait=5
# Finished jobs stay visible to squeue for 300 s (SLURM's default); sacct keeps them for good.
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:$GPU_COUNT State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF

cat >"$STATE/etc/gres.conf" <<CONF
NodeName=localhost Name=gpu File=$gpu_file_list
CONF

cat >"$STATE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
CommunicationParameters=NoInAddrAny
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/spool/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
CONF
# The file contains the database password, so only root may read it.
chmod 600 "$STATE/etc/slurmdbd.conf"

# Daemons read the state directory's files (slurmd finds gres.conf and slurmdbd finds
# slurmdbd.conf beside SLURM_CONF); clients read the symlink.
export SLURM_CONF="$STATE/etc/slurm.conf"
mkdir -p "$(dirname "$SYSTEM_CONF")"
ln -s "$SLURM_CONF" "$SYSTEM_CONF"
echo "$SYSTEM_CONF" >"$STATE/created_symlinks"

start_daemon slurmdbd slurmdbd -D
wait_for 60 slurmdbd sacctmgr -i -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=tests organization=helpnet >/dev/null
sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null

start_daemon slurmctld slurmctld -D
wait_for 60 slurmctld scontrol ping
start_daemon slurmd slurmd -D -N localhost

node_idle() {
    local state
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -n 1)
    [ "$state" = idle ]
}
wait_for 60 "node localhost to become idle" node_idle

log "cluster $CLUSTER is up after ${SECONDS} s: node localhost, $cpus CPUs, $memory_mb MB, gpu:$GPU_COUNT"
