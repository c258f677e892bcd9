#!/usr/bin/env bash
# The README "Scaling" figures: `dropedit simulate` runs, one JSON line each under docs/scaling/ and the pool's
# per-unit trace under docs/scaling/traces/ (a run whose file exists is skipped, so the script resumes). Minutes
# each on a 2-core machine; the 128-GPU run wants the machine otherwise idle (load below ~3) and ~16 GB free.
# `python -m simulation.scaling_table docs/scaling` prints the table, `python -m simulation.calibrate
# docs/scaling` fits the discrete-event model on the pie_*gpu_1024 runs and extrapolates.
set -uo pipefail
cd "$(dirname "$0")/../.."
export RAY_AUTH_MODE=disabled RAY_ADDRESS=
mkdir -p docs/scaling/traces
KONTEXT=(--set models.0.name=flux-kontext --set steps=28)
sim() {   # name, then simulate's options
  local name=$1; shift
  [ -s "docs/scaling/$name.json" ] && return
  python -m jobs.simulate configs/demo.yaml "${KONTEXT[@]}" "$@" --trace "docs/scaling/traces/$name.jsonl" \
    > "/tmp/sim-$name.log" 2>&1 && tail -1 "/tmp/sim-$name.log" > "docs/scaling/$name.json"
}
# measured with the earlier actor, which imported torch through the cost model (~330 MB private each)
sim pie_32gpu_1024_faults --gpus 32 --records 700 --configurations 20 --set resolutions=[1024] --kill-actors 3 --write-faults 0.02
sim driver_1k --gpus 8 --records 1000 --configurations 1 --set resolutions=[1024] --scale 0.0001 --batch-size 64 --load-s 1
sim driver_100k --gpus 8 --records 100000 --configurations 1 --set resolutions=[1024] --scale 0.0001 --batch-size 64 --load-s 1
sim pie_32gpu_2048 --gpus 32 --records 700 --configurations 20 --set resolutions=[2048]
sim pie_8gpu_2048 --gpus 8 --records 700 --configurations 20 --set resolutions=[2048]
# the light actor (no torch: ~111 MB private each); one unit per record: these calibrate the discrete-event
# model (python -m simulation.calibrate docs/scaling)
for gpus in 8 16 32 64; do
  sim "pie_${gpus}gpu_1024" --gpus "$gpus" --records 700 --configurations 20 --set resolutions=[1024] --set units.split=none
done
# the graph's own split (units: {split: auto}, pipeline/unit_plan.py): held out, to test the model's prediction
sim pie_64gpu_1024_split --gpus 64 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=rerun
# 128 and 256 GPUs: 128 / 256 actor processes (~16 / ~30 GB) do not fit this shared 24 GiB machine, so one
# process serves K logical GPUs (--gpus-per-actor: num_gpus K, K units at once, docs/scaling/README.md): 64
# processes either way, as at 64 GPUs
for split in auto none; do
  sim "pie_256gpu_1024_k4_${split}" --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=$split --set units.pairing=rerun
  sim "pie_128gpu_1024_k2_${split}" --gpus 128 --gpus-per-actor 2 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=$split --set units.pairing=rerun
done
# the 256-GPU split run again, its first try having run under load 15-32
sim pie_256gpu_1024_k4_auto_rerun --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=rerun
# the 64-GPU calibration run again, its first try having run under load 15-44
sim pie_64gpu_1024_rerun --gpus 64 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=none
# one unit in flight per GPU (pipeline.pools.QUEUE_PER_GPU, was Ray Data's 2): the 256-GPU split run again
sim pie_256gpu_1024_k4_auto_q1 --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=rerun
# the same on a quiet machine (nothing else running; the q1 run above ran under load 10-31)
sim pie_256gpu_1024_k4_auto_q1_quiet --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=rerun
# split parts read `full` back (units.pairing: read_back, the default since; pipeline/reference_readback.py):
# the automatic rule then splits the last 256 records in 8 (no re-run planned), on a quiet machine
sim pie_256gpu_1024_k4_readback --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=read_back
sim pie_128gpu_1024_k2_readback --gpus 128 --gpus-per-actor 2 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=read_back
# the same 256-GPU run at scale 1 (one simulated second is one wall second: this machine's per-unit overheads
# are not magnified by 1 / scale, as they are at the default scale, 0.57 here)
sim pie_256gpu_1024_k4_readback_scale1 --gpus 256 --gpus-per-actor 4 --records 700 --configurations 20 --set resolutions=[1024] --set units.split=auto --set units.pairing=read_back --scale 1
