#!/usr/bin/env bash
# The README "Scaling" figures: `dropedit simulate` runs, one JSON line each under docs/scaling/ (a run whose
# file exists is skipped, so the script resumes). Minutes each on a 2-core machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
export RAY_AUTH_MODE=disabled RAY_ADDRESS=
KONTEXT=(--set models.0.name=flux-kontext --set steps=28)
sim() {   # name, then simulate's options
  local name=$1; shift
  [ -s "docs/scaling/$name.json" ] && return
  python -m jobs.simulate configs/demo.yaml "${KONTEXT[@]}" "$@" > "/tmp/sim-$name.log" 2>&1 \
    && tail -1 "/tmp/sim-$name.log" > "docs/scaling/$name.json"
}
sim pie_32gpu_1024_faults --gpus 32 --records 700 --configurations 20 --set resolutions=[1024] --kill-actors 3 --write-faults 0.02
sim pie_32gpu_1024 --gpus 32 --records 700 --configurations 20 --set resolutions=[1024]
sim driver_1k --gpus 8 --records 1000 --configurations 1 --set resolutions=[1024] --scale 0.0001 --batch-size 64 --load-s 1
sim driver_100k --gpus 8 --records 100000 --configurations 1 --set resolutions=[1024] --scale 0.0001 --batch-size 64 --load-s 1
sim pie_8gpu_1024 --gpus 8 --records 700 --configurations 20 --set resolutions=[1024]
sim pie_32gpu_2048 --gpus 32 --records 700 --configurations 20 --set resolutions=[2048]
sim pie_8gpu_2048 --gpus 8 --records 700 --configurations 20 --set resolutions=[2048]
# 64 actor processes fit this 24 GiB machine (~210 MB each); 128 do not
sim pie_64gpu_1024 --gpus 64 --records 700 --configurations 20 --set resolutions=[1024]
