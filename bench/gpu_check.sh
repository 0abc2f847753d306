#!/usr/bin/env bash
# The GPU path on a GPU machine, installing nothing from the internet:
#   paper-size network timings, a DDP (nccl) check of CoSAM in both phases, a short mixed-precision
#   CoSAMTrainer training through nnU-Net, and the prediction of one full-size volume.
# Usage (repo root, cosam-nn and nnU-Net importable, the cosam commands on PATH): bash bench/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
W=$(mktemp -d)
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pp nnUNet_results=$W/res nnUNet_def_n_proc=8
export nnUNet_extTrainer=$(cosam_trainer_dir) PYTHONUNBUFFERED=1
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step "network timings, paper size"
timeout 120 python3 bench/networks.py --device cuda --repeats 5

step "DDP (nccl, 1 process) in both phases, paper size"
timeout 120 python3 bench/ddp_check.py --size paper

step "synthetic data, convert, plan (12 cases 48 x 256 x 256)"
cosam_make_synthetic "$W/syn" --cases 12 --seed 0 --shape 48 256 256 > /dev/null
cosam_convert_meply "$W/syn" -d 501 > /dev/null
nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np 8 -npfp 8 --no_pbar > "$OUT/plan.log" 2>&1 || tail -20 "$OUT/plan.log"

step "train CoSAMTrainer (paper size, AMP): 2 epochs x 20 iterations, pretrain then joint"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_mem_train.csv" &
MON=$!
# under cProfile: the main process's share of each step (data wait, train_step, checkpoint writes)
COSAM_SAM_CHECKPOINT=${COSAM_SAM_CHECKPOINT:-none} COSAM_EPOCHS=2 COSAM_ITERS=20 COSAM_VAL_ITERS=2 timeout 300 python3 -m cProfile -o "$OUT/train.prof" \
  "$(command -v nnUNetv2_train)" 501 3d_fullres 0 -tr CoSAMTrainer > "$OUT/train.log" 2>&1; echo "train exit $?"
kill $MON
grep -E "phase:|Epoch time|train_loss|Mean Validation|Error|error" "$OUT/train.log" | tail -20
echo "peak GPU memory in training: $(sort -n "$OUT/gpu_mem_train.csv" | tail -1) MiB"
python3 - "$OUT/train.prof" <<'PY'
import pstats, sys
stats = pstats.Stats(sys.argv[1]).stats
wanted = ("train_step", "validation_step", "training_losses", "window_targets", "__next__", "save_checkpoint",
          "on_epoch_end", "on_validation_epoch_end", "backward", "step", "_chosen_proposals", "_proposal_prompts",
          "segment_boxes", "_dense_loss", "perform_actual_validation")
rows = [(fn, v[1], v[3]) for (f, _, fn), v in stats.items() if fn in wanted and v[3] > 0.5]
for fn, calls, cum in sorted(rows, key=lambda r: -r[2])[:20]:
    print(f"{fn:30s} calls {calls:5d}  cumulative {cum:8.1f} s  per call {cum / calls:7.3f} s")
PY

step "predict one full-size volume (300 x 512 x 512), no TTA"
cosam_make_synthetic "$W/big" --cases 1 --seed 1 --shape 300 512 512 > /dev/null
cosam_convert_meply "$W/big" -d 502 -n Big > /dev/null
mkdir -p "$W/in" && cp "$nnUNet_raw"/Dataset502_Big/images*/*.nii.gz "$W/in/"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_mem_pred.csv" &
MON=$!
start=$(date +%s)
timeout 240 nnUNetv2_predict -i "$W/in" -o "$W/pred" -d 501 -c 3d_fullres -f 0 -tr CoSAMTrainer --disable_tta \
  > "$OUT/predict.log" 2>&1; echo "predict exit $?, $(( $(date +%s) - start )) s for one 300 x 512 x 512 volume"
kill $MON
echo "peak GPU memory in prediction: $(sort -n "$OUT/gpu_mem_pred.csv" | tail -1) MiB"
tail -3 "$OUT/predict.log"
