#!/usr/bin/env bash
# Launch jaxseg.train on one machine or many. Every process runs the same command; the
# batch is split over all devices of all processes (see jaxseg/sharding.py).
#
#   ./launch.sh local --config experiments/unet.py            # this host: CPU, 1-8 GPUs, one TPU VM
#   ./launch.sh slurm --config experiments/deeplab.py         # in an sbatch allocation, one task per node
#   ./launch.sh tpu-pod NAME ZONE --config experiments/unet.py  # all workers of a TPU VM pod slice
#
# For slurm and tpu-pod, JAXSEG_MULTIHOST=1 makes the trainer call jax.distributed.initialize(),
# which finds the coordinator from the SLURM or TPU environment. The workdir must be on a
# file system every host sees (GCS bucket, NFS), since checkpoints are written collectively.
set -euo pipefail
mode=${1:?usage: launch.sh local|slurm|tpu-pod [NAME ZONE] --config FILE [--workdir DIR] [--config.a.b=V ...]}
shift
case "$mode" in
  local)
    exec python -m jaxseg.train "$@"
    ;;
  slurm)
    exec srun --ntasks-per-node=1 env JAXSEG_MULTIHOST=1 python -m jaxseg.train "$@"
    ;;
  tpu-pod)
    name=${1:?tpu-pod needs the TPU name}; zone=${2:?tpu-pod needs the zone}; shift 2
    args=$(printf '%q ' "$@")
    exec gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all \
      --command "cd $(printf '%q' "$PWD") && JAXSEG_MULTIHOST=1 python -m jaxseg.train $args"
    ;;
  *)
    echo "launch.sh: unknown mode '$mode'; valid: local, slurm, tpu-pod" >&2
    exit 2
    ;;
esac
