#!/usr/bin/env bash
# Does the paper-size CoSAMTrainer learn on a GPU, and how fast does it train and predict?
#   synthetic 48 x 256 x 256 cases -> convert -> plan -> nnUNetv2_train -tr CoSAMTrainer (AMP, EPOCHS x ITERS)
#   -> cosam_evaluate on the held-out cases (an untrained model scores 0) -> one 300 x 512 x 512 volume
#   predicted without and with TTA. Prints s/iter, validation Dice per epoch, test Dice, s/volume and
#   peak GPU memory. About 8 minutes on one H100 at the defaults.
# Usage (repo root, cosam-nn and nnU-Net installed, a GPU): bash bench/gpu_learning_check.sh OUT_DIR
# COSAM_SAM_CHECKPOINT may point at sam_vit_b_01ec64.pth; unset, U-SAM starts from scratch (none).
set -uo pipefail
OUT=${1:-gpu_learning_out}
EPOCHS=${EPOCHS:-8}
ITERS=${ITERS:-50}
mkdir -p "$OUT"
W=$(mktemp -d)
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/pp nnUNet_results=$W/res nnUNet_def_n_proc=8
export nnUNet_extTrainer=$(cosam_trainer_dir) PYTHONUNBUFFERED=1
export COSAM_SAM_CHECKPOINT=${COSAM_SAM_CHECKPOINT:-none}
step() { echo; echo "=== $1 ($(date +%T))"; }
peak() { sort -n "$1" | tail -1; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step "data: 24 synthetic cases of 48 x 256 x 256 (5 held out), convert, plan"
cosam_make_synthetic "$W/syn" --cases 24 --seed 3 --shape 48 256 256 --test-cases 5 > /dev/null
cosam_convert_meply "$W/syn" -d 501 > /dev/null
nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np 8 -npfp 8 --no_pbar > "$OUT/plan.log" 2>&1 || tail -20 "$OUT/plan.log"

step "train CoSAMTrainer (paper size, AMP): $EPOCHS epochs x $ITERS iterations"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_mem_train.csv" &
MON=$!
start=$(date +%s)
COSAM_EPOCHS=$EPOCHS COSAM_ITERS=$ITERS COSAM_VAL_ITERS=5 COSAM_SEED=0 timeout 420 \
  nnUNetv2_train 501 3d_fullres 0 -tr CoSAMTrainer > "$OUT/train.log" 2>&1; echo "train exit $?, $(( $(date +%s) - start )) s"
kill $MON
grep -E "phase:|Epoch time|Pseudo dice|score threshold|Error|error" "$OUT/train.log" | tail -30
python3 - "$OUT/train.log" "$ITERS" <<'PY'
import re, sys
times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", open(sys.argv[1]).read())]
if len(times) > 1:
    print(f"s/iter after the first epoch: {sum(times[1:]) / (len(times) - 1) / int(sys.argv[2]):.3f}")
PY
echo "peak GPU memory in training: $(peak "$OUT/gpu_mem_train.csv") MiB"

step "test cases: predict and evaluate"
nnUNetv2_predict -i "$nnUNet_raw/Dataset501_Meply/imagesTs" -o "$W/pred_ts" -d 501 -c 3d_fullres -f 0 \
  -tr CoSAMTrainer --disable_tta --save_probabilities > "$OUT/predict_ts.log" 2>&1; echo "predict exit $?"
cosam_evaluate -ref "$nnUNet_raw/Dataset501_Meply/labelsTs" -pred "$W/pred_ts" -o "$OUT" --probs

step "one 300 x 512 x 512 volume, without and with TTA"
cosam_make_synthetic "$W/big" --cases 2 --seed 1 --shape 300 512 512 --test-cases 1 > /dev/null
cosam_convert_meply "$W/big" -d 502 -n Big > /dev/null
mkdir -p "$W/in" && cp "$nnUNet_raw"/Dataset502_Big/imagesTs/*.nii.gz "$W/in/"
for tta in --disable_tta ""; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_mem_pred.csv" &
  MON=$!
  start=$(date +%s)
  timeout 200 nnUNetv2_predict -i "$W/in" -o "$W/pred_big${tta}" -d 501 -c 3d_fullres -f 0 -tr CoSAMTrainer $tta \
    > "$OUT/predict_big${tta}.log" 2>&1
  echo "predict ${tta:-with TTA} exit $?, $(( $(date +%s) - start )) s for one 300 x 512 x 512 volume," \
       "peak GPU memory $(peak "$OUT/gpu_mem_pred.csv") MiB"
  kill $MON
done
