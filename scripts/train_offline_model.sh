#!/usr/bin/env bash
# Retrain the offline default (world-clip / world-v2) from scratch, in the stages recorded in
# data/models/MODEL_CARD.md. Each stage starts from the weights of the one before; the last
# stage's weights, config and training log (which carries every earlier stage's log) end up in
# build/<world>/stage4/. Seeded; uses the GPU when one is present.
#
#   bash scripts/train_offline_model.sh                     # world-v2 (the default, with the direct-path penalty)
#   bash scripts/train_offline_model.sh --plain             # world-v2-plain: the same stages, no direct-path penalty
#   bash scripts/train_offline_model.sh --world world-v3    # the same stages on world-v3's scenes (tag world-v3)
#
# Then: cp build/world-v2/stage4/world-clip-world-v2.* data/models/ && python -m helpers.world_eval --card
# (for --plain: cp build/world-v2-plain/stage4/world-clip-world-v2-plain.* data/models/ &&
#  python -m helpers.world_eval --card --pretrained world-v2-plain, which writes the twin's card section).
# Without a penalty (--plain) a step skips the decomposition's terms: the same weights bit for bit, with
# about 5% less time in the image tower (measured at batch 96 on 2 threads). On 2 CPU threads world-v2's
# stages took 144 min with the penalty and 89 min without; TRAIN_WORKERS=N makes the scenes in N processes.
# TRAIN_NO_SETUP=1 uses the python on the PATH (a machine with torch and open_clip already there).
set -euo pipefail
cd "$(dirname "$0")/.."
plain=""; world=world-v2
while [ $# -gt 0 ]; do
  case "$1" in
    --plain) plain=1; shift ;;
    --world) world=${2:?--world needs a name}; shift 2 ;;
    *) echo "usage: $0 [--plain] [--world world-v3|world-v2]" >&2; exit 2 ;;
  esac
done
if [ -n "$plain" ]; then
  tag=$world-plain; extra=(--direct-penalty 0 --logit-penalty 0)
else
  tag=$world; extra=()
fi
out=build/$tag
if [ -z "${TRAIN_NO_SETUP:-}" ]; then
  bash scripts/setup.sh
  . .venv/bin/activate
fi
threads=${TRAIN_THREADS:-2}
common=(--batch-size 96 --shape-group 4 --probe-weight 0.5 --threads "$threads" --tag "$tag" --world "$world"
        --workers "${TRAIN_WORKERS:-0}")
weights=world-clip-$tag.safetensors
# a stage whose weights exist is not rerun (resume after an interruption, stage by stage)
stage() {
  local dir=$1; shift
  if [ -f "$out/$dir/$weights" ]; then echo "$dir: done ($out/$dir/$weights)"; return; fi
  python -m helpers.training "${common[@]}" --out "$out/$dir" "$@"
}

# 1. the image tower alone on the shape label, then contrastive training with shape groups,
#    a class-caption term for the shapes, and the direct-path penalty late in the run
stage stage1 --steps 1900 --pretrain-steps 700 --lr 1.5e-3 \
  --shape-pairs 0.5 --class-weight 1.0 --penalty-start 0.65 --penalty-full 0.85 "${extra[@]}"
# 2. longer, with class captions for shape and colour; the penalty ramped in early
stage stage2 --init "$out/stage1/$weights" --steps 2400 \
  --lr 1e-3 --shape-pairs 0.5 --class-weight 1.0 --class-factors shape,colour --penalty-start 0.1 --penalty-full 0.4 \
  "${extra[@]}"
# 3. the penalty also measured in the class-caption directions (moves shape's direct path
#    into the last attention layers)
stage stage3 --init "$out/stage2/$weights" --steps 1200 \
  --lr 6e-4 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
  --penalty-full 0.3 --logit-penalty 1.0 "${extra[@]}"
# 4. the same, at a lower learning rate
stage stage4 --init "$out/stage3/$weights" --steps 800 \
  --lr 4e-4 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
  --penalty-full 0.01 --logit-penalty 1.0 "${extra[@]}"
echo "weights: $out/stage4/$weights"
