#!/usr/bin/env bash
# The GPU speed run of issues 18, 30 and 31 as one command that cannot lose its results:
#
#   bash bench/gpu.sh [OUT]                 # real FLUX.1-Kontext-dev, Qwen-Image-Edit, FLUX.2 [klein] 4B and klein
#                                           # KV 9B transformer configs, random bf16 weights; CUDA only
#   bash bench/gpu.sh --smoke [OUT]         # the same end to end on CPU, tiny models, 32² (FLUX.2: 64²; CI:
#                                           # tests/test_gpu_script.py); GPU_SMOKE=1 does the same; each run
#                                           # capped at GPU_SMOKE_CAP_S (600 s: a shared CPU, not a prediction)
#   options: --detail DIR (per-run bench.json/bench.md and logs there instead of OUT: a device machine returns
#            8 files of OUT), --runs A,B (these runs, e.g. qwen-2048, instead of the default list),
#            --train-toy CONFIG (OPTIONAL, after the benchmark: `python -m jobs.train CONFIG` capped at
#            GPU_TRAIN_CAP_S, default 330 s = 5 min of training + 30 s start-up, reserved from the budget; the
#            prepared one is configs/train_toy_v3_gpu.yaml, v2 grown with copy heads, smoke-tested on CPU;
#            the flag takes a path and has no default; skipped in smoke mode)
#
# Runs (bench/gpu_args.py), most important first: flux and qwen at 1024², flux at 2048², FLUX.2 klein 4B at
# 1024², klein KV 9B at 1024², klein 4B at 2048², qwen at 2048². Each is one process (bench/gpu_run.py): the
# forced plans first (bench/forced.py: the mechanisms' own speed) with `full`, 3 repetitions, then every
# registered policy as it decides with `full` (1 repetition; left out of FLUX.1/Qwen at 2048²), every label
# warmed up once by an untimed edit, A/B order rotated per repetition. Steps: 8 (SpotEdit's 4 initial steps and
# Qwen TokenDrop's 4 full steps are followed by pruned ones), FLUX.2 its 4-step protocol, FLUX.1/Qwen at 2048²
# 4 (forced plans only). Qwen's text is repeated to the real model's 1,389/1,377 tokens (bench/gpu_text.py).
#
# Time: bench/gpu_budget.py prices every edit of every run on its real architecture (roofline on an H100 SXM;
# FLUX.2 by FLOPs at peak), PREDICTED, prints the table and drops runs from the end until predictions plus a 30 s
# start-up allowance each fit GPU_BUDGET_S (570 s: the device's 10-minute command less the summary); each run's
# cap is 2 × its prediction + 30 s, clamped to the time left; a run not predicted to finish in the time left is
# not started. A run cut short keeps every edit it finished.
#
# On a lent device machine (which returns 8 files of $OUT):  bash bench/gpu.sh --detail /tmp/gpu-detail "$OUT"
#
# Output: OUT/edits.jsonl (one line per finished edit, written and fsync'd as it finishes; run headers with the
# versions, GPU, driver and SDPA kernel; skips; ends), OUT/budget.json, OUT/environment.txt, OUT/summary.md and
# OUT/summary.json (bench/gpu_summary.py, from the lines: a partial run summarises too), per run
# DETAIL/<run>/bench.{json,md} and DETAIL/<run>.log. SIGTERM/SIGINT: the running run is stopped and the summary
# written from the lines. Exit status 1 when a run is missing or partial, 2 on a usage error.
set -uo pipefail

usage() { echo "usage: bash bench/gpu.sh [--smoke] [--detail DIR] [--runs A,B] [--train-toy CONFIG] [OUT]" >&2; }
smoke="${GPU_SMOKE:-0}" train_toy="" detail="" only="" out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --detail|--runs)
      [[ $# -ge 2 ]] || { usage; exit 2; }
      if [[ "$1" == --detail ]]; then detail="$2"; else only="$2"; fi
      shift 2 ;;
    --train-toy)
      [[ $# -ge 2 && -n "$2" ]] || { echo "bench/gpu.sh: --train-toy needs a config path (the prepared one: configs/train_toy_v3_gpu.yaml)" >&2; exit 2; }
      train_toy="$2"; shift 2 ;;
    -*) usage; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
python="${PYTHON:-python}"
cd "$(dirname "$0")/.."
out="${out:-results/gpu-$(date -u +%Y%m%d-%H%M)}"
detail="${detail:-$out}"
mkdir -p "$out" "$detail"
edits="$out/edits.jsonl"
budget_s="${GPU_BUDGET_S:-570}"
train_cap="${GPU_TRAIN_CAP_S:-330}"
started=$SECONDS

reserve=0 smoke_flag=()
if [[ "$smoke" == 1 ]]; then
  smoke_flag=(--smoke)
  [[ -n "$train_toy" ]] && echo "bench/gpu.sh: --train-toy is skipped in smoke mode" >&2
  train_toy=""
else
  if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: no CUDA device; the real-size run needs one (use --smoke on CPU)" >&2
    exit 2
  fi
  if [[ -n "$train_toy" ]]; then
    [[ -f "$train_toy" ]] || { echo "bench/gpu.sh: --train-toy $train_toy: no such config" >&2; exit 2; }
    reserve=$train_cap
  fi
fi

# versions, GPU, driver and SDPA kernel are in every run's header line (bench/gpu_env.py); here the machine's own
{ date -u; git rev-parse HEAD 2>/dev/null; nvidia-smi 2>/dev/null; } > "$out/environment.txt" 2>&1

# the predicted budget, printed before anything starts; its stdout: "name predicted-s needed-s cap-s" per run
if ! plan=$("$python" -m bench.gpu_budget "${smoke_flag[@]}" --budget-s "$budget_s" --reserve-s "$reserve" \
            --smoke-cap-s "${GPU_SMOKE_CAP_S:-600}" --runs "$only" --json "$out/budget.json"); then
  echo "bench/gpu.sh: cannot price the runs" >&2
  exit 2
fi

summarise() { "$python" -m bench.gpu_summary "$out"; }
pids=() names=() caps=() starts=()
on_signal() {   # stop the runs (their finished edits are on disk), then summarise what is there
  trap - TERM INT
  echo "bench/gpu.sh: stopped; summarising the finished edits" >&2
  # timeout runs in its own process group: signal it here, it passes the signal on to its run (only runs
  # not yet waited for: a reaped id may belong to another process by now)
  local pid
  for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; done
  wait
  summarise
  exit 143
}
trap on_signal TERM INT

start_run() {   # name cap predicted: one run's process under its cap, in the background
  timeout --kill-after=15 "$2" "$python" -m bench.gpu_run "$1" "${smoke_flag[@]}" --edits "$edits" \
    --out "$detail/$1" --started "$(date +%s.%N)" --cap-s "$2" --predicted-s "$3" > "$detail/$1.log" 2>&1 &
  pids+=($!) names+=("$1") caps+=("$2") starts+=("$SECONDS")
}

finish_run() {   # i: wait for run i (a signal interrupts the wait), then its exit line
  local i="$1" status
  wait "${pids[$i]}"
  status=$?
  pids[$i]=""
  "$python" -m bench.gpu_lines append "$edits" kind=exit run="${names[$i]}" status="$status" cap_s="${caps[$i]}" \
    seconds=$((SECONDS - starts[$i])) log="$detail/${names[$i]}.log"
  [[ $status == 0 ]] || echo "bench/gpu.sh: ${names[$i]} failed or hit its cap (exit $status); see" \
    "$detail/${names[$i]}.log" >&2
}

while read -r name predicted needed cap; do
  [[ -n "$name" ]] || continue
  left=$((budget_s - reserve - (SECONDS - started)))
  if [[ "$smoke" != 1 ]] && (( left < needed )); then
    echo "bench/gpu.sh: $name not started: ${left} s left, ${needed} s predicted" >&2
    "$python" -m bench.gpu_lines append "$edits" kind=exit run="$name" status= \
      reason="not started: ${left} s left, ${needed} s predicted"
    continue
  fi
  [[ "$smoke" == 1 ]] || (( cap <= left )) || cap=$left
  echo "bench/gpu.sh: $name (cap ${cap} s, ${needed} s predicted)" >&2
  start_run "$name" "$cap" "$predicted"
  [[ "$smoke" == 1 ]] || finish_run $((${#pids[@]} - 1))   # GPU: one at a time; smoke: side by side (CPU)
done <<< "$plan"
if [[ "$smoke" == 1 ]]; then
  for i in "${!pids[@]}"; do finish_run "$i"; done
fi

summarise
status=$?

if [[ -n "$train_toy" ]]; then   # OPTIONAL: the wider toy model (config chosen elsewhere), after the benchmark
  cap=$((budget_s - (SECONDS - started)))
  (( cap <= train_cap )) || cap=$train_cap
  if (( cap < 60 )); then   # (timeout 0 would mean no cap at all)
    echo "bench/gpu.sh: toy training not started: ${cap} s left" >&2
  else
    echo "bench/gpu.sh: training the toy model: $train_toy (cap ${cap} s) -> $out/train-toy.log" >&2
    timeout --kill-after=15 "$cap" "$python" -m jobs.train "$train_toy" > "$out/train-toy.log" 2>&1 &
    pids+=($!)   # in the background so that a signal stops it too
    wait "${pids[-1]}" || echo "bench/gpu.sh: toy training failed or hit its cap (exit $?); see" \
      "$out/train-toy.log" >&2
    pids[-1]=""
  fi
fi
exit $status
