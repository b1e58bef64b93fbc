#!/usr/bin/env bash
# Retrain the offline default (world-clip / world-v2) from scratch, in the stages recorded in
# data/models/MODEL_CARD.md. Each stage starts from the weights of the one before; the last
# stage's weights, config and training log (which carries every earlier stage's log) end up in
# build/train/stage4/. Seeded; uses the GPU when one is present (about 3 hours on 2 CPU cores).
# Then: cp build/train/stage4/world-clip-world-v2.* data/models/ && python -m helpers.world_eval --card
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=build/train
common=(--batch-size 96 --shape-group 4 --probe-weight 0.5 --threads 2)
weights=world-clip-world-v2.safetensors

# 1. the image tower alone on the shape label, then contrastive training with shape groups,
#    a class-caption term for the shapes, and the direct-path penalty late in the run
python -m helpers.training "${common[@]}" --out "$out/stage1" --steps 1900 --pretrain-steps 700 --lr 1.5e-3 \
  --shape-pairs 0.5 --class-weight 1.0 --penalty-start 0.65 --penalty-full 0.85
# 2. longer, with class captions for shape and colour; the penalty ramped in early
python -m helpers.training "${common[@]}" --out "$out/stage2" --init "$out/stage1/$weights" --steps 2400 \
  --lr 1e-3 --shape-pairs 0.5 --class-weight 1.0 --class-factors shape,colour --penalty-start 0.1 --penalty-full 0.4
# 3. the penalty also measured in the class-caption directions (moves shape's direct path
#    into the last attention layers)
python -m helpers.training "${common[@]}" --out "$out/stage3" --init "$out/stage2/$weights" --steps 1200 \
  --lr 6e-4 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
  --penalty-full 0.3 --logit-penalty 1.0
# 4. the same, at a lower learning rate
python -m helpers.training "${common[@]}" --out "$out/stage4" --init "$out/stage3/$weights" --steps 800 \
  --lr 4e-4 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
  --penalty-full 0.01 --logit-penalty 1.0
echo "weights: $out/stage4/$weights"
