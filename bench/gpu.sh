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
# 3. concurrent: the same CLI commands several at once on the one GPU (what `rotnet repro
#    --jobs N` does with independent stages): per-process and summed img/s.
# 4. cpu: the host CPU on two cores (taskset), in whatever precision `auto` resolves to there
#    and in fp32, natively and with oneDNN/ATen held to AVX2: bench/throughput.py at width 1
#    and one quick-profile pretraining through the CLI. Runs beside part 3 on other cores.
# PARTS picks the parts (default: all four), e.g. PARTS="concurrent cpu" bash bench/gpu.sh;
# CONCURRENT="conv supervised" measures those stages side by side instead.
set -uo pipefail
OUT=${OUT:-/tmp/rotnet-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
command -v taskset >/dev/null || taskset() { shift 2; "$@"; }  # no util-linux: no pinning
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
PARTS=${PARTS:-bench cli concurrent cpu}
part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }
if part bench && [ -z "${SKIP_BENCH:-}" ]; then
  bench bf16-eager --precision bf16
  bench bf16-compile --precision bf16 --compile
  bench fp32-eager --precision fp32
fi

DATA=(--profile paper --dataset generated --set "data.train_size=$TRAIN" --set "data.test_size=$TEST"
      --device "$DEVICE" --no-track ${CLI_FLAGS:-})
epochs() {  # name, checkpoint: per-epoch figures from the checkpoint's history
  python3 - "$1" "$2" <<'PY' 
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

cpu_part() {  # on cores 0-1: what this host's CPU does, both kinds of kernels
  { lscpu | grep "Model name"; grep -m1 -ow -E "avx2|avx512f|avx512_bf16|amx_bf16|amx_tile" /proc/cpuinfo \
      | sort -u | tr '\n' ' '; echo; } > "$OUT/cpu.txt"
  local cpu="taskset -c 0,1 env OMP_NUM_THREADS=2"
  local avx2="ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2"
  for run in native-auto native-fp32 avx2-auto; do
    local kind=${run%-*} precision=${run#*-} vars=""
    [ $kind = avx2 ] && vars=$avx2
    [ $precision = auto ] && $cpu $vars python3 bench/throughput.py --device cpu --seconds 3 \
        ${CPU_BENCH_FLAGS:-} --json "$OUT/cpu-$kind.json" > "$OUT/cpu-$kind.txt" 2>&1
    local t0=$(date +%s.%N)
    $cpu $vars python3 -m rotnet.cli pretrain --profile quick --device cpu --no-track \
      --set runtime.precision=$precision --epochs 2 --out "$WORK/cpu-$run" ${CPU_CLI_FLAGS:-} \
      > "$OUT/cpu-pretrain-$run.log" 2>&1
    echo "cpu-pretrain-$run wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" >> "$OUT/cpu.txt"
    epochs "cpu-pretrain-$run" "$WORK/cpu-$run/checkpoint.pt" >> "$OUT/cpu.txt"
  done
}
part cpu && { cpu_part & }
GPU_CORES=${GPU_CORES:-2-15}

if part cli; then
timed pretrain-eager pretrain "${DATA[@]}" --epochs 2 --out "$WORK/pre"
epochs pretrain-eager "$WORK/pre/checkpoint.pt" | tee -a "$OUT/cli.txt"
timed pretrain-compile pretrain "${DATA[@]}" --epochs 2 --set runtime.compile=true --out "$WORK/pre-c"
epochs pretrain-compile "$WORK/pre-c/checkpoint.pt" | tee -a "$OUT/cli.txt"
timed probe-nonlinear probe "$WORK/pre/checkpoint.pt" --block 2 --head nonlinear "${DATA[@]}" --epochs 2 --out "$WORK/nl"
epochs probe-nonlinear "$WORK/nl/checkpoint.pt" | tee -a "$OUT/cli.txt"
timed probe-conv probe "$WORK/pre/checkpoint.pt" --block 2 --head conv "${DATA[@]}" --epochs 2 --out "$WORK/conv"
epochs probe-conv "$WORK/conv/checkpoint.pt" | tee -a "$OUT/cli.txt"
timed supervised supervised "${DATA[@]}" --epochs 2 --out "$WORK/sup"
epochs supervised "$WORK/sup/checkpoint.pt" | tee -a "$OUT/cli.txt"
fi

concurrent() {  # name, count, then the rotnet command: count copies at once, each its own --out
  local name=$1 n=$2; shift 2
  local t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    taskset -c "$GPU_CORES" python3 -m rotnet.cli "$@" --out "$WORK/$name-x$n-$i" > "$OUT/$name-x$n-$i.log" 2>&1 &
  done
  wait $(jobs -p | tail -n "$n")
  echo "$name x$n wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$OUT/concurrent.txt"
  for i in $(seq 1 "$n"); do epochs "$name-x$n-$i" "$WORK/$name-x$n-$i/checkpoint.pt" | tee -a "$OUT/concurrent.txt"; done
}
# CONCURRENT picks the sets: pretrain, probe (need pretrain's checkpoint), conv, supervised
CONCURRENT=${CONCURRENT:-pretrain probe}
want() { case " $CONCURRENT " in *" $1 "*) return 0;; *) return 1;; esac; }
if part concurrent; then
  concurrent pretrain 1 pretrain "${DATA[@]}" --epochs 4
  if want pretrain; then concurrent pretrain 3 pretrain "${DATA[@]}" --epochs 4; fi
  BACKBONE="$WORK/pretrain-x1-1/checkpoint.pt"
  for n in 1 4; do
    want probe && concurrent probe $n probe "$BACKBONE" --block 2 --head nonlinear "${DATA[@]}" --epochs 6
    want conv && concurrent conv $n probe "$BACKBONE" --block 2 --head conv "${DATA[@]}" --epochs 6
    want supervised && concurrent supervised $n supervised "${DATA[@]}" --epochs 6
  done
fi
wait
nvidia-smi --query-gpu=name,memory.used,temperature.gpu,clocks.sm --format=csv,noheader 2>&1 | tee -a "$OUT/gpu.txt"
