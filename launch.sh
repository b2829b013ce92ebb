#!/usr/bin/env bash
# Starts one training run on several processes: N local processes over loopback, or every
# worker of a Cloud TPU VM pod. Run ./launch.sh --help for the details.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  ./launch.sh --local N [--port PORT] -- ARGS...
  ./launch.sh --tpu NAME --zone ZONE [--project PROJECT] [--remote-dir DIR] [--dry-run] -- ARGS...

Runs `python -m stn_jax.main ARGS...` on several processes that train together.

--local N      N processes on this machine, on the CPU (JAX_PLATFORMS defaults to cpu; each
               process has one CPU device unless XLA_FLAGS says otherwise). Process 0 runs
               the coordinator on 127.0.0.1:PORT (a free port unless --port is given); each
               process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
               Output lines are prefixed with "[i] ", the process id. The script waits for
               all of them and exits with the first failure's status; when one fails, or on
               Ctrl-C, it stops the others.
--tpu NAME     The same command on every worker of the TPU VM pod NAME, through
               `gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command ...`;
               JAX finds the coordinator and the process ids itself. The repository must
               be checked out and installed on every worker, in --remote-dir (default:
               ~/<this repository's folder name>), and --workdir must be a folder every
               worker sees (a shared filesystem).
--dry-run      Print the command (gcloud, or each local process's environment) instead of
               running it.

Environment: PYTHON (default: python, else python3) runs stn_jax.main locally;
REMOTE_PYTHON (default: python3) on the TPU workers: shell text that the workers' shell reads
as typed, e.g. ~/venv/bin/python or "env XLA_FLAGS=... python3"; the arguments after it are
quoted.

Examples:
  ./launch.sh --local 2 -- --config=experiments/distorted_mnist.py:rts,st_cnn,smoke \
      --workdir=/tmp/two_processes
  ./launch.sh --tpu my-pod --zone us-central2-b -- \
      --config=experiments/distorted_mnist.py:rts,st_cnn --workdir=/mnt/shared/runs/rts
EOF
}

die() {
  echo "launch.sh: $*" >&2
  echo "Run ./launch.sh --help for the usage." >&2
  exit 2
}

# One word for a POSIX shell: 'text', with every ' written as '\''.
quote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(quote "$w")"
  done
  printf '%s' "$out"
}

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value."
}

mode="" num="" port="" tpu="" zone="" project="" remote_dir="" dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --local) need_value "$@"; mode=local; num=$2; shift 2 ;;
    --local=*) mode=local; num=${1#*=}; shift ;;
    --port) need_value "$@"; port=$2; shift 2 ;;
    --port=*) port=${1#*=}; shift ;;
    --tpu) need_value "$@"; mode=tpu; tpu=$2; shift 2 ;;
    --tpu=*) mode=tpu; tpu=${1#*=}; shift ;;
    --zone) need_value "$@"; zone=$2; shift 2 ;;
    --zone=*) zone=${1#*=}; shift ;;
    --project) need_value "$@"; project=$2; shift 2 ;;
    --project=*) project=${1#*=}; shift ;;
    --remote-dir) need_value "$@"; remote_dir=$2; shift 2 ;;
    --remote-dir=*) remote_dir=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the arguments of stn_jax.main go after --)." ;;
  esac
done
args=("$@")

[[ -n $mode ]] || die "give --local N or --tpu NAME."
[[ ${#args[@]} -gt 0 ]] ||
  die "give the arguments of stn_jax.main after --, e.g. -- --config=... --workdir=..."

if [[ $mode == tpu ]]; then
  [[ -n $zone ]] || die "--tpu needs --zone."
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  dir=${remote_dir:-"~/$(basename "$repo")"}
  # A leading ~/ stays unquoted so that the worker's shell expands it.
  if [[ $dir == "~/"* ]]; then
    cd_dir="~/$(quote "${dir#\~/}")"
  else
    cd_dir=$(quote "$dir")
  fi
  # REMOTE_PYTHON is shell text for the workers' shell, as one would type it there (a ~ to
  # expand, an `env X=1` prefix); only the arguments after it are quoted.
  remote_python=${REMOTE_PYTHON:-python3}
  [[ $remote_python =~ [^[:space:]] && $remote_python != *$'\n'* ]] ||
    die "REMOTE_PYTHON must be a command on one line, got '$remote_python'."
  remote="cd $cd_dir && $remote_python $(quote_all -m stn_jax.main --distributed "${args[@]}")"
  cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone")
  [[ -z $project ]] || cmd+=(--project "$project")
  cmd+=(--worker=all --command "$remote")
  if (( dry_run )); then
    quote_all "${cmd[@]}"
    echo
    exit 0
  fi
  command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk)."
  exec "${cmd[@]}"
fi

# --local N
[[ $num =~ ^[1-9][0-9]*$ ]] || die "--local needs a positive number of processes, got '$num'."
[[ -z $tpu && -z $zone && -z $project && -z $remote_dir ]] ||
  die "--zone, --project and --remote-dir go with --tpu, not --local."
(( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )) ||
  die "--local needs bash 5.1 or newer (wait -n -p), this is $BASH_VERSION."
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=$(command -v python || command -v python3) || die "no python found; set PYTHON."
fi
if [[ -z $port ]]; then
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
fi
[[ $port =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'."
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

if (( dry_run )); then
  for ((i = 0; i < num; i++)); do
    echo "$(quote_all JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$num \
      JAX_PROCESS_ID=$i JAX_PLATFORMS=$JAX_PLATFORMS "$PYTHON" -m stn_jax.main "${args[@]}")"
  done
  exit 0
fi

pids=()
stop() {
  # Each process leads its own process group (set -m): stop the groups. SIGTERM first: each
  # saves a checkpoint and exits, and one whose peer is gone is stopped by its watchdog with a
  # sentence about 6 s later (stn_jax/runtime/peers.py); SIGKILL whatever is left after fifteen
  # seconds.
  local pid alive
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 30); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
interrupted() {
  trap '' INT TERM
  echo "launch.sh: interrupted; stopping the processes." >&2
  stop
  exit 130
}
trap interrupted INT TERM

set -m
for ((i = 0; i < num; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$num JAX_PROCESS_ID=$i \
    "$PYTHON" -m stn_jax.main "${args[@]}" \
    > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) < /dev/null &
  pids+=($!)
done
set +m

status=0
left=("${pids[@]}")
while [[ ${#left[@]} -gt 0 ]]; do
  finished=""
  rc=0
  wait -n -p finished "${left[@]}" || rc=$?
  [[ -n ${finished:-} ]] || break  # nothing left to wait for
  rest=()
  for pid in "${left[@]}"; do [[ $pid == "$finished" ]] || rest+=("$pid"); done
  left=("${rest[@]}")
  if (( rc != 0 )); then
    for ((i = 0; i < num; i++)); do [[ ${pids[i]} == "$finished" ]] && break; done
    echo "launch.sh: process $i exited with status $rc; stopping the others." >&2
    status=$rc
    stop
    break
  fi
done
exec 2>/dev/null  # bash's "Killed" notices of the stopped processes
wait || true  # the stopped processes and the output filters
exit "$status"
