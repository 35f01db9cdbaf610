#!/usr/bin/env bash
# The GPU figures in README ("The paper protocol on one GPU"), in one call on a GPU machine
# whose python3 has torch, torchvision, typer, rich and pyyaml (MLflow is not needed: the
# CLI runs use --no-track). Writes logs and JSON under $OUT (default /tmp/rotnet-gpu).
#
#   bash bench/gpu.sh
#
# 1. bench/throughput.py: naive vs project path, bf16 and fp32, eager and compiled, with the
#    bf16 / fp32 matmul roof measured in the same run.
# 2. The paper profile through the real CLI on the generated data set at CIFAR-10 scale
#    (50 000 train / 10 000 test, width 1, batch 128): two pretraining epochs (eager, then
#    compiled), two epochs of the block-2 non-linear probe, the conv probe and the
#    supervised NIN. Per-epoch seconds, img/s and peak GPU memory come from each checkpoint.
set -uo pipefail
OUT=${OUT:-/tmp/rotnet-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
WORK=$(mktemp -d)
# For a dry run on a CPU: DEVICE=cpu TRAIN=256 TEST=128 BENCH_FLAGS="--width 0.125" \
#   CLI_FLAGS="--set pretrain.width=0.125" SKIP_BENCH=1 bash bench/gpu.sh
DEVICE=${DEVICE:-cuda} TRAIN=${TRAIN:-50000} TEST=${TEST:-10000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"

bench() {  # name, then bench flags
  local name=$1; shift
  python3 bench/throughput.py --device "$DEVICE" --seconds "${BENCH_SECONDS:-4}" --workers 8 \
    --json "$OUT/bench-$name.json" ${BENCH_FLAGS:-} "$@" 2>&1 | tee "$OUT/bench-$name.txt" | grep -v '^ ' | head -40
}
if [ -z "${SKIP_BENCH:-}" ]; then
  bench bf16-eager --precision bf16
  bench bf16-compile --precision bf16 --compile
  bench fp32-eager --precision fp32
fi

DATA=(--profile paper --dataset generated --set "data.train_size=$TRAIN" --set "data.test_size=$TEST"
      --device "$DEVICE" --no-track ${CLI_FLAGS:-})
epochs() {  # name, checkpoint: per-epoch figures from the checkpoint's history
  python3 - "$1" "$2" <<'PY' | tee -a "$OUT/cli.txt"
import sys, torch
state = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
for m in state["history"]:
    print(sys.argv[1], {k: round(v, 2) for k, v in m.items() if isinstance(v, float)})
PY
}
timed() {  # name, then the rotnet command
  local name=$1; shift
  local t0=$(date +%s.%N)
  python3 -m rotnet.cli "$@" > "$OUT/$name.log" 2>&1 || { echo "$name FAILED"; tail -5 "$OUT/$name.log"; }
  echo "$name wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$OUT/cli.txt"
}
timed pretrain-eager pretrain "${DATA[@]}" --epochs 2 --out "$WORK/pre"
epochs pretrain-eager "$WORK/pre/checkpoint.pt"
timed pretrain-compile pretrain "${DATA[@]}" --epochs 2 --set runtime.compile=true --out "$WORK/pre-c"
epochs pretrain-compile "$WORK/pre-c/checkpoint.pt"
timed probe-nonlinear probe "$WORK/pre/checkpoint.pt" --block 2 --head nonlinear "${DATA[@]}" --epochs 2 --out "$WORK/nl"
epochs probe-nonlinear "$WORK/nl/checkpoint.pt"
timed probe-conv probe "$WORK/pre/checkpoint.pt" --block 2 --head conv "${DATA[@]}" --epochs 2 --out "$WORK/conv"
epochs probe-conv "$WORK/conv/checkpoint.pt"
timed supervised supervised "${DATA[@]}" --epochs 2 --out "$WORK/sup"
epochs supervised "$WORK/sup/checkpoint.pt"
nvidia-smi --query-gpu=name,memory.used,temperature.gpu,clocks.sm --format=csv,noheader 2>&1 | tee -a "$OUT/gpu.txt"
