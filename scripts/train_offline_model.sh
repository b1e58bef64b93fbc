#!/usr/bin/env bash
# Retrain the offline default (world-clip / world-v3) from scratch, in the stages recorded in
# data/models/MODEL_CARD.md. Each stage starts from the weights of the one before; the last
# stage's weights, config and training log (which carries every earlier stage's log) end up in
# build/<tag>/stage6/ (build/<tag>/stage4/ for world-v2). Seeded; uses the GPU when one is present.
#
#   bash scripts/train_offline_model.sh                     # world-v3 (the default, with the direct-path penalty)
#   bash scripts/train_offline_model.sh --plain             # world-v3-plain: the same stages, no direct-path penalty
#   bash scripts/train_offline_model.sh --world world-v2    # world-v2 (the previous default): its four stages alone
#   bash scripts/train_offline_model.sh --world world-v2 --plain   # world-v2-plain
#
# world-v3's models learn in two steps: world-v2's four stages (on world-v2's scenes, under world-v2's tag, in
# build/world-v2[-plain]/), then stages 5 and 6 on world-v3's scenes. Weights of world-v2's fourth stage found
# in data/models/ (the float16 files every stage saves and the next one loads) are taken as the start instead
# of rerunning the four stages; TRAIN_FROM_SCRATCH=1 reruns them anyway.
#
# Then: cp build/world-v3/stage6/world-clip-world-v3.* data/models/ && python -m helpers.data.world_eval --card
# (for --plain: cp build/world-v3-plain/stage6/world-clip-world-v3-plain.* data/models/ &&
#  python -m helpers.data.world_eval --card --pretrained world-v3-plain, which writes the twin's card section).
# Without a penalty (--plain) a step skips the decomposition's terms: the same weights bit for bit, with
# about 5% less time in the image tower (measured at batch 96 on 2 threads). On 2 CPU threads world-v2's
# stages took 144 min with the penalty and 89 min without; TRAIN_WORKERS=N makes the scenes in N processes.
# TRAIN_THREADS (default 2) sets torch's threads; TRAIN_NO_SETUP=1 uses the python on the PATH (a machine
# with torch and open_clip already there).
set -euo pipefail
cd "$(dirname "$0")/.."
plain=""; world=world-v3
while [ $# -gt 0 ]; do
  case "$1" in
    --plain) plain=1; shift ;;
    --world) world=${2:?--world needs a name}; shift 2 ;;
    *) echo "usage: $0 [--plain] [--world world-v3|world-v2]" >&2; exit 2 ;;
  esac
done
suffix=""; extra=()
if [ -n "$plain" ]; then suffix=-plain; extra=(--direct-penalty 0 --logit-penalty 0); fi
tag=$world$suffix
# world-v3 continues from world-v2 (below): stages 1-4 on world-v2, under world-v2's tag
base=world-v2$suffix
if [ "$world" = world-v3 ]; then first=world-v2; else first=$world; fi
out=build/$base
if [ -z "${TRAIN_NO_SETUP:-}" ]; then
  bash scripts/setup.sh
  . .venv/bin/activate
fi
threads=${TRAIN_THREADS:-2}
common=(--batch-size 96 --shape-group 4 --probe-weight 0.5 --threads "$threads" --tag "$base" --world "$first"
        --workers "${TRAIN_WORKERS:-0}")
weights=world-clip-$base.safetensors
# a stage whose weights exist is not rerun (resume after an interruption, stage by stage), nor any
# stage before the last one done
stage() {
  local dir=$1; shift
  if [ -f "$out/$dir/$weights" ] || [ -f "$out/stage4/$weights" ]; then echo "$dir: done"; return; fi
  python -m helpers.data.training "${common[@]}" --out "$out/$dir" "$@"
}
if [ "$world" = world-v3 ] && [ -z "${TRAIN_FROM_SCRATCH:-}" ] && [ -f "data/models/$weights" ] \
   && [ ! -f "$out/stage4/$weights" ]; then
  mkdir -p "$out/stage4"
  cp "data/models/$weights" "data/models/world-clip-$base.train.json" "data/models/world-clip.json" "$out/stage4/"
  echo "stages 1-4: the shipped $base weights"
fi

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
if [ "$world" = world-v3 ]; then
  # 5-6. world-v3's scenes (sizes over 4x, outlines on and off, rotation, clutter, habitat captions):
  #      stage 5 at stage 2's learning rate and longer (the new scenes are a new task: 1,200 steps at 6e-4 left
  #      the training batches' accuracy still rising), stage 6 at stage 4's; the penalties as in
  #      stages 3 and 4
  v3out=build/$tag
  v3weights=world-clip-$tag.safetensors
  v3common=(--batch-size 96 --shape-group 4 --probe-weight 0.5 --threads "$threads" --tag "$tag" --world world-v3
            --workers "${TRAIN_WORKERS:-0}")
  v3stage() {
    local dir=$1 init=$2; shift 2
    if [ -f "$v3out/$dir/$v3weights" ]; then echo "$dir: done"; return; fi
    python -m helpers.data.training "${v3common[@]}" --out "$v3out/$dir" --init "$init" "$@"
  }
  v3stage stage5 "$out/stage4/$weights" --steps 3200 \
    --lr 1e-3 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
    --penalty-full 0.3 --logit-penalty 1.0 "${extra[@]}"
  v3stage stage6 "$v3out/stage5/$v3weights" --steps 800 \
    --lr 4e-4 --shape-pairs 0.6 --class-weight 1.5 --class-factors shape,colour --penalty-start 0.0 \
    --penalty-full 0.01 --logit-penalty 1.0 "${extra[@]}"
  echo "weights: $v3out/stage6/$v3weights"
else
  echo "weights: $out/stage4/$weights"
fi
