#!/usr/bin/env bash
# Every GPU figure of docs/speed.md in one go: at most BUDGET (540) s, install included.
#
#   bash bench/gpu_all.sh               # on a GPU machine; figures in $OUT_DIR (default bench/)
#   bash bench/gpu_all.sh --cpu-smoke   # the same code paths at a tiny size on a CPU: do they run?
#   PARTS=step,evaluate bash bench/gpu_all.sh    # some parts only (step, nhwc, compiled, evaluate, b64)
#
# On a node without internet, the packages it lacks travel as bench/gpu_kit.py's kits in .whl/;
# where .whl/ is there, this script installs what it holds first (docs/speed.md: the calls).
#
# ffhq_p2's network at 256 px, bf16, ZeRO stage 0 (the harness's default), in the order of
# what the figures decide, each part with its own time limit:
#   step      bench/adm.py eager at global batch 16: MFU, DeepSpeed/torch, peak memory, the
#             profile's time shares; DDIM-40, dpm-solver++ and unipc at 20 steps, dpm-solver++
#             at 10 and unipc at 8 (the built-in pair's fewest no worse than DDIM-40); samples/s,
#             10k projected
#   nhwc      the eager step and unipc 8 in channels_last (torch arm)
#   compiled  the same step compiled (torch arm): the first, compiling step apart, then MFU;
#             unipc 8 compiled
#   evaluate  bench/adm_evaluate.py: one evaluate job, 1,000 samples by unipc (8 steps), FID
#             against a folder, end to end
#   b64       batch 64 (torch arm), eager then compiled, in what is left of BUDGET
# Each part runs for its own limit or what is left of BUDGET, whichever is less.
# Each part appends its figures to adm-gpu-speed.jsonl as each setting ends (a step's figures
# also once the step is timed, before its samplers), so a part that runs out of time loses
# only what it had not finished. The measured files of earlier sessions (adm-gpu.json ...)
# are not touched.
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
PARTS=${PARTS:-step,nhwc,compiled,evaluate,b64}
BUDGET=${BUDGET:-540}      # seconds for everything, install included: the call's 600 less a margin
JSONL=$OUT_DIR/adm-gpu-speed.jsonl
LOG=$OUT_DIR/adm-gpu-speed.log
touch "$JSONL"     # appended to: one part per call keeps the other's figures
echo "# $(date -u +%FT%TZ) bench/gpu_all.sh ${SMOKE[*]:-} parts $PARTS budget $BUDGET s" | tee -a "$LOG"
# packages carried to a node without internet (bench/gpu_kit.py): installed, then on the path;
# a kit that fails to install costs the parts that need it, not the others
SITE=${KIT_SITE:-/tmp/site}
if [ -d .whl ] && [ ${#SMOKE[@]} = 0 ]; then
    "$PY" bench/gpu_kit.py install --site "$SITE" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "# kit install failed (rc $rc): the parts it serves will fail" | tee -a "$LOG"
fi
if [ -d "$SITE/.kits" ]; then
    export PYTHONPATH="$PYTHONPATH:$SITE"
    [ -d "$SITE/lpips-weights" ] && export SDFT_LPIPS_DIR=${SDFT_LPIPS_DIR:-$SITE/lpips-weights}
fi

# a part's time: its own limit, or what is left of BUDGET (10 s kept for the last words)
limit() {
    local left=$(( BUDGET - SECONDS - 10 ))
    echo $(( $1 < left ? $1 : left ))
}
# the last line of stdin that is a JSON object (DeepSpeed logs to stdout too)
last_json() {
    "$PY" -c 'import json, sys
found = ""
for line in sys.stdin:
    try:
        if isinstance(json.loads(line), dict):
            found = line.strip()
    except ValueError:
        pass
if found:
    print(found)'
}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"

# one bench/adm.py measurement: its figures go to the jsonl as each setting ends, its final
# JSON object to adm-gpu-speed-NAME.json; a part past its time loses only itself
adm() {
    local name=$1 seconds; seconds=$(limit "$2"); shift 2
    [[ ,$PARTS, == *,$name,* ]] || return 0
    if (( seconds < 20 )); then echo "# adm.py ($name) skipped: ${seconds} s of BUDGET left" | tee -a "$LOG"; return 0; fi
    timeout "$seconds" "$PY" bench/adm.py --gpu-only --precisions bf16 --zero-stage 0 --jsonl "$JSONL" \
        "$@" "${SMOKE[@]}" 2>> "$LOG" | tee -a "$LOG" | last_json > "$OUT_DIR/adm-gpu-speed-$name.json"
    echo "# adm.py ($name) rc ${PIPESTATUS[0]} after ${SECONDS} s" | tee -a "$LOG"
}

# (1) eager, batch 16: MFU, DeepSpeed/torch, the profile, every sampler (~1.5 min)
adm step "${STEP_TIMEOUT:-120}" --batches 16 --compile off \
    --samplers ddim:40,dpm-solver++:20,unipc:20,dpm-solver++:10,unipc:8
# (1b) the same in NHWC (channels_last), the torch arm, one solver: does cuDNN's NHWC pay? (1 min)
adm nhwc "${NHWC_TIMEOUT:-60}" --batches 16 --compile off --arms torch --channels-last --samplers unipc:8
# (2) compiled, batch 16, the torch arm: the first step's compile time apart, then MFU;
#     one compiled solver (the compile is the network's, whichever solver calls it)
adm compiled "${COMPILED_TIMEOUT:-210}" --batches 16 --compile on --compiled-arms torch --samplers unipc:8

# (3) one evaluate job end to end, eager (the compiled figures are (2)'s): ~2 min
if [[ ,$PARTS, == *,evaluate,* ]] && (( $(limit 150) < 20 )); then
    echo "# adm_evaluate.py skipped: $(limit 150) s of BUDGET left" | tee -a "$LOG"
elif [[ ,$PARTS, == *,evaluate,* ]]; then
timeout "$(limit "${EVALUATE_TIMEOUT:-150}")" "$PY" bench/adm_evaluate.py --num-samples 1000 --sampler unipc --steps 8 \
    --compile off --precision bf16 "${SMOKE[@]}" 2>> "$LOG" | tee -a "$LOG" | last_json > "$OUT_DIR/adm-gpu-speed-evaluate.json"
echo "# adm_evaluate.py rc ${PIPESTATUS[0]} after ${SECONDS} s" | tee -a "$LOG"
[ -s "$OUT_DIR/adm-gpu-speed-evaluate.json" ] && "$PY" -c 'import json, sys, torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(json.dumps({"setting": "evaluate", "device": device, "torch": torch.__version__,
                  "figures": json.load(open(sys.argv[1]))}))' \
    "$OUT_DIR/adm-gpu-speed-evaluate.json" >> "$JSONL"
fi

# (4) batch 64, the torch arm, eager then compiled, in what is left of BUDGET seconds (eager at
#     64 ran out of the H200's memory with both arms resident; a setting that does is null)
adm b64 "$BUDGET" --batches 64 --compile both --arms torch --samplers ""
echo "# figures: $JSONL" | tee -a "$LOG"
