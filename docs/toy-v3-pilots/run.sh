#!/bin/bash
# Issue 29's recipe pilots: two queues, one torch thread each (at most 2 pilots at once); re-running resumes
# (a pilot whose JSON exists is skipped).
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RAY_AUTH_MODE=disabled
D=results/toy-v3-pilots
COMMON="--model toy-flux-kontext-v2 --size 256 --steps 200 --batch 16 --lr 1.5e-4 --warmup 15 --data-seed 4 --data-start 0 --categories v2 --val-n 16 --threads 1 --latent-cache $D/latents"
run() {  # name, options
  local name=$1; shift
  python -m studies.toy.recipe_pilot $COMMON "$@" --save $D/$name-model --out $D/$name.json > $D/$name.log 2>&1
}
queue1() { run A_control_w4 --edit-weight 4; run C_text_encoders --edit-weight 4 --train-text-encoders;
           run E_grow_4_8_copy_heads --edit-weight 4 --grow 4,8 --copy-heads;
           run F_open_copy_g02 --edit-weight 4 --grow 4,8 --copy-heads --open-gate 0.2; }
queue2() { run B_w2 --edit-weight 2; run D_grow_4_8 --edit-weight 4 --grow 4,8;
           python -m studies.toy.recipe_pilot $COMMON --steps 0 --edit-weight 4 --out $D/v2_baseline.json > $D/v2_baseline.log 2>&1; }
# H (this session, run alone with two threads): the copy prior in the parameterisation (actors.reference_residual):
# v2's features, its output layer zeroed, the transformer predicting x0 minus the reference
hpilot() { python -m studies.toy.recipe_pilot $COMMON --threads 2 "$@"; }
[ "${1:-}" = H ] && { hpilot --edit-weight 2 --reference-residual --save $D/H_reference_residual_w2-model \
  --out $D/H_reference_residual_w2.json > $D/H_reference_residual_w2.log 2>&1; exit; }
# I (one thread, beside the H run's continuation): the residual flow, the prior on the transformer's input too
[ "${1:-}" = I ] && { python -m studies.toy.recipe_pilot $COMMON --edit-weight 2 --residual-flow \
  --save $D/I_residual_flow_w2-model --out $D/I_residual_flow_w2.json > $D/I_residual_flow_w2.log 2>&1; exit; }
# J (an inference-time probe, not a training pilot): true CFG at sampling time on v2, diffusers' own pipeline
[ "${1:-}" = J ] && { python -m studies.toy.cfg_probe --scales 1,2 --n 32 --out docs/toy-v3-pilots/J_true_cfg_probe.json; exit; }
# K: instruction dropout to a copy (--copy-dropout 0.1: a dropped instruction's target is its source), so that true
# CFG's empty-prompt branch means "keep the source"; then the probe of J on the continued model
[ "${1:-}" = K ] && { hpilot --edit-weight 4 --copy-dropout 0.1 --save $D/K_copy_dropout-model \
  --out $D/K_copy_dropout.json > $D/K_copy_dropout.log 2>&1 && cp $D/K_copy_dropout.json docs/toy-v3-pilots/ && \
  python -m studies.toy.cfg_probe --path $D/K_copy_dropout-model --scales 1,2,3 --n 32 \
    --out docs/toy-v3-pilots/K_copy_dropout_cfg_probe.json; exit; }
# L, M, N (alone, two threads, B's recipe and draws): a 4x learning rate (L was stopped at step 61: its loss ran
# 25-55 % above B's), training σ nearer noise (SD3's logit-normal location m = 1), the order-aware T5
[ "${1:-}" = L ] && { hpilot --edit-weight 2 --lr 6e-4 --save $D/L_lr6e-4_w2-model --out $D/L_lr6e-4_w2.json \
  > $D/L_lr6e-4_w2.log 2>&1; exit; }
[ "${1:-}" = M ] && { hpilot --edit-weight 2 --sigma-mean 1 --save $D/M_sigma_mean1_w2-model \
  --out $D/M_sigma_mean1_w2.json > $D/M_sigma_mean1_w2.log 2>&1; exit; }
[ "${1:-}" = N ] && { hpilot --edit-weight 2 --ordered-text 2 --save $D/N_ordered_text2_w2-model \
  --out $D/N_ordered_text2_w2.json > $D/N_ordered_text2_w2.log 2>&1 && \
  python -m studies.toy.order_probe --path $D/N_ordered_text2_w2-model --out docs/toy-v3-pilots/order_probe_N.json; exit; }
# the order probe on v2: does the toy tell "make the blue diamond orange" from "make the orange diamond blue"?
[ "${1:-}" = order ] && { python -m studies.toy.order_probe --out docs/toy-v3-pilots/order_probe_v2.json; exit; }
# O, P, Q, R, S: the memorisation test on v3 (one thread each): 300 steps over the same 32 records of seed 11 (150
# passes each), scored on those very records; O0 scores v3 on them before any step. O: w = 2 at the run's lr;
# P: w = 16; Q: lr 1e-3
MEM="--model toy-flux-kontext-v3 --size 256 --steps 300 --warmup 15 --pool 32 --data-seed 11 --data-start 0 \
  --score-seed 11 --n-eval 32 --threads 1 --latent-cache $D/memorise-cache"
[ "${1:-}" = O ] && { python -m studies.toy.recipe_pilot $MEM --steps 0 --out docs/toy-v3-pilots/O_memorise_pool32_step0.json && \
  python -m studies.toy.recipe_pilot $MEM --lr 1.5e-4 --edit-weight 2 --out docs/toy-v3-pilots/O_memorise_pool32.json; exit; }
[ "${1:-}" = P ] && { python -m studies.toy.recipe_pilot $MEM --lr 1.5e-4 --edit-weight 16 \
  --out docs/toy-v3-pilots/P_memorise_pool32_w16.json; exit; }
[ "${1:-}" = Q ] && { python -m studies.toy.recipe_pilot $MEM --lr 1e-3 --edit-weight 2 \
  --out docs/toy-v3-pilots/Q_memorise_pool32_lr1e-3.json; exit; }
# S: the training σ nearer noise (SD3's m = 1); R: v3 grown to 4 + 8 blocks with the copy path open (F's set-up)
[ "${1:-}" = S ] && { python -m studies.toy.recipe_pilot $MEM --lr 1.5e-4 --edit-weight 2 --sigma-mean 1 \
  --out docs/toy-v3-pilots/S_memorise_pool32_sigma_mean1.json; exit; }
[ "${1:-}" = R ] && { python -m studies.toy.recipe_pilot $MEM --lr 1.5e-4 --edit-weight 2 --grow 4,8 --copy-heads \
  --open-gate 0.2 --out docs/toy-v3-pilots/R_memorise_pool32_grown_open.json; exit; }
# T: S's σ on fresh scenes (data seed 9), 400 steps from v3, scored on the held-out card
[ "${1:-}" = T ] && { python -m studies.toy.recipe_pilot --model toy-flux-kontext-v3 --size 256 --steps 400 --lr 1.5e-4 \
  --warmup 15 --edit-weight 2 --sigma-mean 1 --data-seed 9 --data-start 0 --categories v2 --n-eval 80 --threads 2 \
  --out docs/toy-v3-pilots/T_v3_sigma_mean1_400.json; exit; }
# V: the σ run's learning rate at the default σ (m = 0), to pair with the run's step-500 checkpoint (same data seed)
[ "${1:-}" = V ] && { python -m studies.toy.recipe_pilot --model toy-flux-kontext-v3 --size 256 --steps 500 --lr 3e-4 \
  --warmup 50 --edit-weight 2 --data-seed 9 --data-start 0 --categories v2 --n-eval 80 --threads 2 \
  --out docs/toy-v3-pilots/V_v3_lr3e-4_m0_500.json; exit; }
# U: a sampling probe, no training: v3 sampled at FLUX.1's 1024² shift (the scheduler's base_shift 0.5 -> 1.15 in a copy)
[ "${1:-}" = U ] && { rm -rf /tmp/v3-shift && cp -r models/toy-flux-kontext-v3 /tmp/v3-shift && \
  sed -i 's/"base_shift": 0.5/"base_shift": 1.15/' /tmp/v3-shift/scheduler/scheduler_config.json && \
  python -m jobs.toy_card --model /tmp/v3-shift --threads 2 && cp /tmp/v3-shift/eval.json docs/toy-v3-pilots/U_sampling_shift_probe.json; exit; }
# the records' latents first, in two halves side by side: every pilot then reads them
python -m studies.toy.recipe_pilot $COMMON --fill-cache 0/2 > $D/cache0.log 2>&1 &
python -m studies.toy.recipe_pilot $COMMON --fill-cache 1/2 > $D/cache1.log 2>&1 &
wait
queue1 & queue2 & wait
