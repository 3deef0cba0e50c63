#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and CI: munge, slurmctld, slurmd and,
# for `sacct` (which submitit polls), slurmdbd backed by MariaDB. Debian packages, no
# systemd, no cgroups. Idempotent: `start` only starts what is not running.
#
#   bash slurm/local-slurm.sh start|stop|status
#
# Knobs: SLURM_LOCAL_DIR (state, logs; default /var/spool/sdft-slurm), SLURM_LOCAL_PARTITION
# (default debug), SLURM_LOCAL_CPUS (CPUs to advertise; more than the machine has
# oversubscribes, which lets a test run a job array and its dependants side by side).
set -euo pipefail

ACTION="${1:-start}"
DIR="${SLURM_LOCAL_DIR:-/var/spool/sdft-slurm}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
CLUSTER=sdftlocal
DBPASS=sdftbench
export DEBIAN_FRONTEND=noninteractive PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

say() { printf '[local-slurm] %s\n' "$*"; }
die() { say "ERROR: $*"; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
retry() { local n=$1; shift; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }

[ "$(id -u)" = 0 ] || die "run as root: it installs packages and starts daemons"

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  # keep the packages' scripts from starting daemons with their own configuration
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created=1; fi
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $created = 1 ] && rm -f $policy
  return 0
}

write_config() {
  mkdir -p "$DIR"/{ctld,spool,log,run} /etc/slurm
  local host hw cpus mem
  host="$(hostname -s)"
  hw="$(slurmd -C | head -1)"
  cpus="${SLURM_LOCAL_CPUS:-$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")}"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  # SchedulerParameters: a job whose dependency is met (or that was just submitted) is started
  # at once, not at the next periodic pass; measured in slurmctld's log on a cold test run:
  # each dependent job started within 0.5 s of its parent's end, so the Slurm tests' time is
  # their jobs'. MinJobAge stays 300 s (the default): tests read finished jobs from sacct.
  cat >"$DIR/slurm.conf.new" <<CONF
# written by sdft-bench slurm/local-slurm.sh
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  CONFIG_CHANGED=0
  if ! cmp -s "$DIR/slurm.conf.new" /etc/slurm/slurm.conf; then
    mv "$DIR/slurm.conf.new" /etc/slurm/slurm.conf; CONFIG_CHANGED=1
  else rm -f "$DIR/slurm.conf.new"; fi
  cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
}

# munged and MariaDB may be the machine's own, running before `start`: `stop` stops them only
# where `start` started them (a marker in $DIR/run), as it stops only the Slurm daemons whose
# pid files are in $DIR
start_munge() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  retry 50 sh -c 'munge -n | unmunge' || die "munged did not start"
  touch "$DIR/run/munged.started"
}

start_database() {
  if ! mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; then
    install -d -o mysql -g root -m 0755 /run/mysqld
    /etc/init.d/mariadb start >/dev/null
    retry 60 mariadb-admin --connect-timeout=2 ping || die "mariadb did not start"
    touch "$DIR/run/mariadb.started"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  alive "$DIR/run/slurmdbd.pid" || /usr/sbin/slurmdbd
  retry 60 sacctmgr -n show cluster || die "slurmdbd does not answer ($DIR/log/slurmdbd.log)"
  sacctmgr -n -P show cluster format=cluster | grep -qx $CLUSTER || sacctmgr -i add cluster $CLUSTER >/dev/null
}

stop_daemons() {
  # only a controller of ours: without one, scontrol would ask whatever Slurm it finds
  if alive "$DIR/run/slurmctld.pid"; then scontrol shutdown >/dev/null 2>&1 || true; fi
  local name pid
  for name in slurmd slurmctld slurmdbd; do
    alive "$DIR/run/$name.pid" || continue
    pid="$(cat "$DIR/run/$name.pid")"; kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

wait_for_node() {
  local host state
  host="$(hostname -s)"
  for _ in $(seq 360); do
    state="$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1)"
    case "$state" in
      idle|mixed|allocated|completing) return 0;;
      down*|drain*|fail*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true;;
    esac
    sleep 0.25
  done
  die "node $host not ready (state '$state'); see $DIR/log"
}

start() {
  local t0=$SECONDS
  install_packages
  write_config
  [ "$CONFIG_CHANGED" = 1 ] && stop_daemons
  start_munge
  start_database
  alive "$DIR/run/slurmctld.pid" || /usr/sbin/slurmctld
  retry 60 sh -c 'scontrol ping | grep -q UP' || die "slurmctld does not answer ($DIR/log/slurmctld.log)"
  alive "$DIR/run/slurmd.pid" || /usr/sbin/slurmd
  wait_for_node
  # the first batch job after a start is scheduled late: absorb that here, not in a test
  timeout 60 srun -Q -N1 -n1 -t 2 true || die "srun true failed; see $DIR/log"
  say "up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %D %T %c CPUs')"
}

stop() {
  if alive "$DIR/run/slurmctld.pid" && scontrol ping 2>/dev/null | grep -q UP; then
    scancel --full --quiet --user=root 2>/dev/null || true
  fi
  stop_daemons
  if [ -e "$DIR/run/mariadb.started" ]; then
    /etc/init.d/mariadb stop >/dev/null 2>&1 || true
    rm -f "$DIR/run/mariadb.started"
  fi
  if [ -e "$DIR/run/munged.started" ]; then
    [ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$DIR/run/munged.started"
  fi
  say "stopped"
}

status() {
  local name
  for name in slurmctld slurmd slurmdbd; do
    alive "$DIR/run/$name.pid" && echo "$name: running" || echo "$name: stopped"
  done
  sinfo 2>/dev/null || true
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
