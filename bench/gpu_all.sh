#!/usr/bin/env bash
# Every GPU figure of docs/speed.md in one go: about 8 minutes on one H200.
#
#   bash bench/gpu_all.sh               # on a GPU machine; figures in $OUT_DIR (default bench/)
#   bash bench/gpu_all.sh --cpu-smoke   # the same code paths at a tiny size on a CPU: do they run?
#   PARTS=step bash bench/gpu_all.sh    # one part only (step or evaluate), e.g. when a machine's
#                                       # packages arrive in several calls
#
# 1. bench/adm.py: ffhq_p2's network at 256 px, bf16, ZeRO stage 0 (the harness's default):
#    the SDFT step at global batch 16 and 64, eager and compiled (MFU, DeepSpeed/torch
#    ratio, peak memory, the first compiled step apart), DDIM-40, dpm-solver++ and unipc at
#    20 steps (samples/s, 10k projected), eager and compiled.
# 2. bench/adm_evaluate.py: one evaluate job of that network, 1,000 samples by dpm-solver++
#    (20 steps), FID against a folder, end to end.
# Each part appends its figures to adm-gpu-speed.jsonl as it ends, so a part that runs out of
# time loses only itself. The measured files of earlier sessions (adm-gpu.json ...) are not touched.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # this checkout's code, installed or not
PY=${PYTHON:-python}
SMOKE=()
if [ "${1:-}" = "--cpu-smoke" ]; then
    SMOKE=(--cpu-smoke)
    OUT_DIR=${OUT_DIR:-$(mktemp -d)}
fi
OUT_DIR=${OUT_DIR:-bench}
mkdir -p "$OUT_DIR"
PARTS=${PARTS:-step,evaluate}
JSONL=$OUT_DIR/adm-gpu-speed.jsonl
LOG=$OUT_DIR/adm-gpu-speed.log
touch "$JSONL"     # appended to: one part per call keeps the other's figures
echo "# $(date -u +%FT%TZ) bench/gpu_all.sh ${SMOKE[*]:-} parts $PARTS" | tee -a "$LOG"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"

# (1) the step and the samplers: ~5 min (compiling the 256 px network takes most of it)
if [[ ,$PARTS, == *,step,* ]]; then
timeout "${STEP_TIMEOUT:-330}" "$PY" bench/adm.py --gpu-only --precisions bf16 --batches 16,64 --compile both \
    --compiled-arms torch --zero-stage 0 --samplers ddim:40,dpm-solver++:20,unipc:20 \
    --jsonl "$JSONL" "${SMOKE[@]}" 2>> "$LOG" | tail -1 > "$OUT_DIR/adm-gpu-speed-step.json"
echo "# adm.py rc ${PIPESTATUS[0]}" | tee -a "$LOG"
fi

# (2) one evaluate job end to end: ~2 min
if [[ ,$PARTS, == *,evaluate,* ]]; then
timeout "${EVALUATE_TIMEOUT:-150}" "$PY" bench/adm_evaluate.py --num-samples 1000 --sampler dpm-solver++ --steps 20 \
    "${SMOKE[@]}" 2>> "$LOG" | tail -1 | tee "$OUT_DIR/adm-gpu-speed-evaluate.json"
echo "# adm_evaluate.py rc ${PIPESTATUS[0]}" | tee -a "$LOG"
[ -s "$OUT_DIR/adm-gpu-speed-evaluate.json" ] && \
    sed 's/^/{"setting": "evaluate", "figures": /; s/$/}/' "$OUT_DIR/adm-gpu-speed-evaluate.json" >> "$JSONL"
fi
echo "# figures: $JSONL" | tee -a "$LOG"
