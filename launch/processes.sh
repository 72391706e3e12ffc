#!/usr/bin/env bash
# Train with N processes on this machine, without SLURM (tests, or one process per GPU
# group): starts N copies of hierjax.main joined through a coordinator on localhost and
# waits for all of them. If one fails, the others are stopped and its exit status is
# returned; a SIGTERM or Ctrl-C to this script is passed on to every process (they agree
# on a step, save it and exit 0).
#
#   launch/processes.sh N CONFIG[:ARGS] WORKDIR [--config.KEY=VALUE ...]
#
# Environment:
#   PORT                 the coordinator's port (default: a free one)
#   GPUS_PER_PROCESS=k   process i sees GPUs i*k .. i*k+k-1 (CUDA_VISIBLE_DEVICES)
#   XLA_FLAGS            e.g. --xla_force_host_platform_device_count=2 for 2 CPU devices
#                        per process (the processes talk through gloo on CPU)
#   PYTHON               the interpreter (default: python)
# Process i's output goes to WORKDIR/logs/process_I.log and, for process 0, also here.
set -uo pipefail
if [[ $# -lt 3 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N CONFIG[:ARGS] WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
n=$1
config=$2
workdir=$3
shift 3
python=${PYTHON:-python}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
mkdir -p "$workdir/logs"

pids=()
stop_all() {  # $1: the signal
  for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null; done
}
trap 'stop_all TERM' TERM INT

for ((i = 0; i < n; i++)); do
  if [[ -n ${GPUS_PER_PROCESS:-} ]]; then
    export CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS_PER_PROCESS)) $((i * GPUS_PER_PROCESS + GPUS_PER_PROCESS - 1)))
  fi
  cmd=("$python" -m hierjax.main --config="$config" --workdir="$workdir"
       --config.distributed.coordinator="localhost:$port"
       --config.distributed.num_processes="$n" --config.distributed.process_id="$i" "$@")
  if ((i == 0)); then
    "${cmd[@]}" > >(tee "$workdir/logs/process_0.log") 2>&1 &
  else
    "${cmd[@]}" > "$workdir/logs/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
declare -A live  # pid -> process index
for i in "${!pids[@]}"; do live[${pids[$i]}]=$i; done
while ((${#live[@]} > 0)); do
  unset finished
  wait -n -p finished "${!live[@]}"
  code=$?
  [[ -n ${finished:-} ]] || continue  # a trapped signal interrupted the wait
  i=${live[$finished]}
  unset "live[$finished]"
  if ((code != 0 && status == 0)); then
    status=$code
    echo "process $i exited with status $code; stopping the others" \
         "(its log: $workdir/logs/process_$i.log)" >&2
    for pid in "${!live[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  fi
done
exit $status
