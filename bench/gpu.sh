#!/usr/bin/env bash
# The GPU speed run of issues 18 and 30 as one command (≤ 12 minutes of H100 time, the caps' sum):
#
#   bash bench/gpu.sh [OUT]            # real FLUX.1-Kontext-dev, Qwen-Image-Edit, FLUX.2 [klein] 4B and klein KV 9B
#                                      # transformer configs, bf16
#   bash bench/gpu.sh --smoke [OUT]    # the same runs end to end on CPU, tiny model, 32² (FLUX.2: 64²; CI:
#                                      # tests/test_gpu_script.py)
#   GPU_SMOKE=1 bash bench/gpu.sh OUT  # the same as --smoke
#
# For each family (flux, qwen) and size (1024², 2048²) one `dropedit bench` run (in-process, no Ray, no
# pipeline-overhead part) on a model of the real classes whose transformer has the real config's depth and
# width (actors/families/*/architecture.py: FLUX 19 + 38 blocks, Qwen 60 blocks, 24 heads × 128) with RANDOM weights (timing only),
# text encoders and VAE tiny: every registered policy as it decides, and every mechanism forced to skip at fixed
# ratios (bench/forced.py: gather at keep 0.5, ToPi Mode B from layer 10 at keep 0.5 with and without anchor
# steps, SpotEdit at 50 % and 20 % active, the latter with its selector), 3 steps, 1 repetition.
# FLUX.2 (issue 30): klein 4B (5 dual + 20 single blocks, 24 heads × 128) at 1024² and 2048², klein KV 9B (8 + 24,
# 32 × 128; the reference K/V reused after the first call) at 1024², each with 2 reference images (the edited
# one at the edit size, one more at 1024²): every registered policy (ToPi and SpotEdit refuse the family, the KV
# pipeline refuses attention statistics: listed as skipped with the reason), the forced gather at keep 0.5 and
# TokenDrop / Sparse Context at their FLUX.2 settings (bench/gpu_args.py).
# The real-size transformer is only built on CUDA: there parameters are created on the GPU in bf16
# (bench/speed.py), whereas on CPU a random 12 B / 20 B model in fp32 (48 / 80 GB, minutes of initialisation)
# is impractical; the smoke mode uses the tiny benchmark model instead.
# Time: FLOP-model estimate on an H100 (~500 TFLOP/s) ≈ 6–7 min for the four runs; each run has a time cap
# (GPU_TIMEOUT_SCALE multiplies them) so the whole stays under 8 min; a run that hits it is listed as missing.
# FLUX.2 runs, FLOP model (costs/flops.py) at ~450 TFLOP/s effective: a full step with 2 references (512 text
# tokens, the noisy ones, the first reference's as many, 4096 of the second) is 129 TFLOP for klein 4B at 1024²
# (0.29 s), 659 TFLOP at 2048² (1.46 s), 265 TFLOP for klein 9B at 1024² (0.59 s); a run makes at most 19 such
# steps (6 policies that run × 3 steps + the warm-up step; dropping and KV reuse only lower it): 5.5 s, 28 s and
# 11 s, plus the start-up the flux 1024² cap above leaves (70 s − 15 s of steps = 55 s: imports, the random
# model built on the GPU, kernel warm-up), rounded up: caps 70, 100 and 80 s, 250 s more, 12 min in all.
# Output: OUT/<family>-<size>/bench.{json,md}, OUT/<family>-<size>.log, OUT/environment.txt,
# OUT/summary.md and OUT/summary.json (bench/gpu_summary.py). Exit status 1 when a run has no results.
set -uo pipefail

smoke="${GPU_SMOKE:-0}"
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
out="${1:-results/gpu-$(date -u +%Y%m%d-%H%M)}"
python="${PYTHON:-python}"
scale="${GPU_TIMEOUT_SCALE:-1}"
cd "$(dirname "$0")/.."
mkdir -p "$out"

if [[ "$smoke" == 1 ]]; then
  runs=("flux 32 300" "qwen 32 300" "flux2 64 300")   # FLUX.2 refuses images under 64 px
  smoke_flag=--smoke
else
  if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: no CUDA device; the real-size run needs one (use --smoke on CPU)" >&2
    exit 2
  fi
  runs=("flux 1024 70" "qwen 1024 90" "flux 2048 130" "qwen 2048 180"   # family size cap-seconds
        "flux2 1024 70" "flux2-kv 1024 80" "flux2 2048 100")
  smoke_flag=
fi

{ date -u; git rev-parse HEAD 2>/dev/null; "$python" -c "import torch, diffusers; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"; nvidia-smi 2>/dev/null; } \
  > "$out/environment.txt" 2>&1

names=()
for run in "${runs[@]}"; do
  read -r family size cap <<< "$run"
  name="$family-$size"
  names+=("$name")
  if ! list=$("$python" -m bench.gpu_args "$family" "$size" "$out/$name" $smoke_flag); then
    echo "bench/gpu.sh: $name: cannot build its arguments" >&2
    continue
  fi
  mapfile -t args <<< "$list"
  cap=$(awk -v c="$cap" -v s="$scale" 'BEGIN { printf "%d", c * s }')
  echo "bench/gpu.sh: $name (cap ${cap} s)" >&2
  run_one() {
    timeout "$cap" "$python" -m jobs.cli "${args[@]}" > "$out/$name.log" 2>&1 \
      || echo "bench/gpu.sh: $name failed or hit its cap (exit $?); see $out/$name.log" >&2
  }
  if [[ "$smoke" == 1 ]]; then run_one & else run_one; fi   # smoke: the families side by side (CPU, 1 thread)
done
wait

"$python" -m bench.gpu_summary "$out" "${names[@]}"
