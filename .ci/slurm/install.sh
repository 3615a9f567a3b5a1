#!/usr/bin/env bash
# Install a single-node SLURM cluster with accounting from Debian's packages.
#
# Installs slurmctld, slurmd, the client commands, munge, slurmdbd and MariaDB. The packages'
# maintainer scripts are kept from starting any daemon: start.sh starts them, records their
# PIDs and stop.sh ends exactly those. Safe to run twice: it does nothing when every program
# is already installed.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
PROGRAMS=(slurmctld slurmd sbatch sacct munged slurmdbd mariadbd)

missing=0
for program in "${PROGRAMS[@]}"; do
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then
        missing=1
    fi
done
if [ "$missing" = 0 ]; then
    echo "slurm install: all packages already installed"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "slurm install: must run as root to install ${PACKAGES[*]}" >&2
    exit 1
fi

# invoke-rc.d reads policy-rc.d, and its exit code 101 means "do not start". Without it the
# mariadb-server postinst would start a server whose PID start.sh does not record.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "slurm install: installed ${PACKAGES[*]}"
