#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine whose time is short (its own torch and jax, nothing
# installed, the source tree carried): each step has its own time limit, and the steps run in order of
# importance, so a session with 10 minutes of device time gets the first ones whole.
#   1 roofline   the matmul peaks (float32, TF32, bf16) and the memory bandwidth
#   2 parity     float64 and float32 on the seed case
#   3 tf32       training rows in TF32 at batch $BATCH, each twin's best modes
#   4 bf16       the same in bf16 mixed precision
#   5 resnet     the resnet preset's training rows in TF32
#   6 infer      inference rows in TF32
#   7 profile    where each twin's best TF32 training step spends its time
#   8 parity-bf16  parity in bf16 mixed precision on the seed and residual cases
#   9 ddp        DDP over NCCL (two or more GPUs only)
# Everything lands in OUT_DIR (log.txt and one folder of results per step).
#   [STEPS="roofline parity tf32"] benchmarks/gpu.sh OUT_DIR    (DEVICE=cpu BATCH=64 LIMIT=0.3 try it on a CPU)
set -u
out=${1:?usage: benchmarks/gpu.sh OUT_DIR}
device=${DEVICE:-cuda}
batch=${BATCH:-4096}
scale=${LIMIT:-1}  # multiplies every step's time limit
mkdir -p "$out"
log=$out/log.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output appended to the log
    local name=$1 limit
    limit=$(python3 -c "print(max(1, round($2 * $scale)))")
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$log"
    local start=$SECONDS
    timeout "$limit" "$@" >> "$log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$log"
}

wanted() { [[ " ${STEPS:-roofline parity tf32 bf16 resnet infer profile parity-bf16 ddp} " == *" $1 "* ]]; }

{
    date -u
    git rev-parse --short HEAD 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
    python3 -c "import torch, jax, flax, optax; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} >> "$log" 2>&1

bench=(python3 -m benchmarks --device "$device" --no-progress --peak-sizes 2048,8192)
train=("${bench[@]}" --kinds train --batch-sizes "$batch" --repeats 6)
best_tf32=eager,eager-channels-last,compile-default-channels-last,jit,jit-native
wanted roofline && step roofline 60 "${bench[@]}" --roofline-only --tf32 --dtype bfloat16 --out "$out/roofline"
wanted parity && step parity 120 python3 -m parity_tests --device "$device" --dtype float64 --dtype float32 \
    --steps 5 --case seed --summary
wanted tf32 && step bench-tf32 200 "${train[@]}" --tf32 --out "$out/tf32" --modes "$best_tf32"
wanted bf16 && step bench-bf16 150 "${train[@]}" --dtype bfloat16 --out "$out/bf16" \
    --modes eager,compile-reduce-overhead,jit
wanted resnet && step bench-resnet 150 "${train[@]}" --tf32 --channels 64,128 --res-blocks 1 --out "$out/resnet" \
    --modes eager-channels-last,compile-default-channels-last,jit
wanted infer && step bench-infer 120 "${bench[@]}" --kinds infer --batch-sizes "$batch" --repeats 6 --tf32 \
    --out "$out/infer" --modes eager,compile-default,jit
if wanted profile; then
    step profile-torch 90 python3 -m benchmarks.profile --device "$device" --backend torch \
        --mode compile-default --tf32 --batch-size "$batch" --top 15
    step profile-jax 60 python3 -m benchmarks.profile --device "$device" --backend jax --tf32 --batch-size "$batch" \
        --top 15
fi
wanted parity-bf16 && step parity-bf16 120 python3 -m parity_tests --device "$device" --dtype bfloat16 --steps 5 \
    --case seed --case residual --summary
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if wanted ddp && ((gpus >= 2)); then  # one process per GPU (a single process is no data-parallel run)
    step ddp-nccl 90 torchrun --standalone --nproc-per-node "$gpus" -m twinvae train --backend torch \
        --dataset digits --epochs 2 --batch-size 128 --out /tmp/twinvae-ddp --no-progress
    ls -l /tmp/twinvae-ddp >> "$log" 2>&1
fi
rm -f "$out"/*/results.csv  # what comes back from a lent machine is counted in files
tail -n 60 "$log"
