#!/usr/bin/env bash
# Train on one host with all of its GPUs (jax.pmap spans every visible device).
#
#   launch/local.sh configs/cub_resnet50.py /data/runs/cub [--config.KEY=VALUE ...]
#
# Pick GPUs with CUDA_VISIBLE_DEVICES; the global batch (config.batch_size) is split
# evenly over them. Several processes: launch/processes.sh (this machine) or
# launch/slurm.sbatch (several nodes).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG[:ARGS] WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
# Leave a little GPU memory to the CUDA runtime and cuDNN workspaces.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python -m hierjax.main --config="$config" --workdir="$workdir" "$@"
