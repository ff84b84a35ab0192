#!/bin/bash
# Training UniverSeg over MPI on a Slurm cluster (docs/cluster.md): the ranks share each step's
# --batch tasks and train the weights one process would, bit for bit; rank 0 alone prints and
# writes (checkpoints, log, chart, weights). Submit it again to continue: it resumes from its
# checkpoint, with whatever nodes it gets.
#
#   mkdir -p logs && sbatch examples/slurm/train_mpi.sh
#
# Needs `universeg` built with -DUNIVERSEG_MPI=ON against the cluster's MPI (module load ...),
# on PATH or in UNIVERSEG. Edit the #SBATCH lines and the settings below for your cluster.
#SBATCH --job-name=universeg-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/train-%j.out
# SIGTERM to every rank 5 minutes before the time limit: all stop after the same step and rank 0
# writes a final checkpoint, which the next submission resumes from.
#SBATCH --signal=TERM@300
set -euo pipefail

universeg=${UNIVERSEG:-universeg}
run=${RUN:-runs/train-mpi}                 # OUT, its checkpoint, log and chart go here
data=${DATA:-}                             # labelled folders, comma-separated; empty: synthetic tasks only
batch=${BATCH:-$SLURM_NTASKS}              # tasks per step, at least one per rank; it is the training's own
                                           # setting (the mean of B tasks' gradients), so keep it when the
                                           # number of ranks changes between submissions
mkdir -p "$run"
args=(--out "$run/weights.safetensors" --batch "$batch" --threads "$SLURM_CPUS_PER_TASK"
      --config "${CONFIG:-[64,64,64,64]}" --size "${SIZE:-128}" --steps "${STEPS:-100000}" --support-size 16 --support-min 4
      --lr "${LR:-1e-3}" --checkpoint-every 200 --log-every 50 --eval-every 1000)
if [ -f "$run/weights.ckpt.safetensors" ]; then
  args+=(--resume "$run/weights.ckpt.safetensors")   # the seed and the step come from the checkpoint
else
  args+=(--seed "${SEED:-0}")
fi
[ -n "$data" ] && args+=(--synthetic --data "$data" --real-fraction "${REAL_FRACTION:-0.5}")

# srun starts the ranks (Open MPI and MPICH built with Slurm's PMI; add --mpi=pmix where the
# cluster needs it); each gets its --cpus-per-task cores for its OpenMP threads.
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
srun --cpus-per-task="$SLURM_CPUS_PER_TASK" "$universeg" train "${args[@]}"
