#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine whose time is short: the machine and versions, the
# benchmark on CUDA in TF32 and in bf16 mixed precision (training at one large batch), and the parity suite
# on CUDA (float64, float32, bf16) for three standard cases. Each step has its own time limit, so a slow
# one leaves the others their time; everything lands in OUT_DIR (log.txt, tf32/ and bf16/ results).
#   [STEPS="tf32 bf16 parity profile ddp"] benchmarks/gpu.sh OUT_DIR    (DEVICE=cpu BATCH=64 LIMIT=2 try it on a CPU)
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

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
    python3 -c "import torch, jax, flax, optax; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} >> "$log" 2>&1

what=${STEPS:-tf32 bf16 parity profile ddp}  # a lent machine's call is at most 10 minutes: split them over two calls
bench=(python3 -m benchmarks --device "$device" --kinds train --batch-sizes "$batch" --repeats 6 --no-progress
       --peak-sizes 2048,8192)
if [[ " $what " == *" tf32 "* ]]; then
    step bench-tf32 270 "${bench[@]}" --tf32 --out "$out/tf32" --modes eager,compile-default,jit,jit-native
fi
if [[ " $what " == *" bf16 "* ]]; then
    step bench-bf16 200 "${bench[@]}" --dtype bfloat16 --out "$out/bf16" --modes eager,compile-reduce-overhead,jit
fi
if [[ " $what " == *" parity "* ]]; then
    step parity 170 python3 -m parity_tests --device "$device" --dtype float64 --dtype float32 --dtype bfloat16 \
        --steps 5 --case seed --case residual --case "mlp 1x28x28" --summary
fi
if [[ " $what " == *" profile "* ]]; then  # where each twin's TF32 step spends its time on the GPU
    step profile-torch 90 python3 -m benchmarks.profile --device "$device" --backend torch --mode compile-default \
        --tf32 --batch-size "$batch" --top 15
    step profile-jax 60 python3 -m benchmarks.profile --device "$device" --backend jax --tf32 --batch-size "$batch" --top 15
fi
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [[ " $what " == *" ddp "* ]] && ((gpus >= 2)); then  # DDP over NCCL, one process per GPU (a single
    # process is no data-parallel run: the trainer wraps the model in DDP only for two or more)
    step ddp-nccl 90 torchrun --standalone --nproc-per-node "$gpus" -m twinvae train --backend torch --dataset digits \
        --epochs 2 --batch-size 128 --out /tmp/twinvae-ddp --no-progress
    ls -l /tmp/twinvae-ddp >> "$log" 2>&1
fi
rm -f "$out"/*/results.csv  # what comes back from a lent machine is counted in files
tail -n 60 "$log"
