#!/usr/bin/env bash
# Issue 81's one GPU call: wsss against the official codes on one GPU, in parts ordered by what matters most, each
# under its own `timeout` and inside a total budget (BUDGET seconds, default 500: the call's hard limit is 560), each
# writing its log to $OUT as it goes (a part cut short keeps what it printed):
#   1. ExCEL: the training iteration (before LVC and with LVC) and the training-free labels, both codes
#      (bench/bench_excel_official.py --device cuda; COPIES x the 6 photos);
#   2. operator counts on CUDA (bench/bench_op_count.py): SeCo's and ExCEL's iterations, and SeCo's iteration timed
#      (configs/seco/voc.yaml, 448 px, batch 4, float32; median of SECO_ITERS), wsss and, where .official/SeCo
#      travelled, the official loop body on the same batch and weights (bench_op_count.py --seco);
#   3. `wsss predict --crf` against the plain prediction and the CRF alone on the synthetic set
#      (bench/bench_crf_overlap.py: CRF_IMAGES (150) photos of CRF_SIZE (448) px; infer.crf_workers at its default,
#      every core);
#   4. `wsss sweep-bkg` and `wsss eval` per photo, on the GPU beside the CPU, with and without a read-ahead of the
#      files (bench/bench_scoring.py: SCORING_IMAGES (100) synthetic photos of SCORING_SIZE (448) px, one pass);
#   5. CLIP-ES's CAMs, both codes (bench/bench_clip_es_official.py --device cuda), if at least 90 s are left (it was
#      measured on an H100 before: 0.50x, BENCHMARKS.md "On a GPU").
#   6. `wsss route` in each mode (CLIP + DINOv2, CLIP only, class names only, no weights) on synthetic photos
#      (bench/bench_route_modes.py: ROUTE_PHOTOS (200) photos of ROUTE_SIZE (320) px, random ViT-B/16 and ViT-S/14
#      weights, --folds 0), if at least 120 s are left: each mode's wall time and its steps' (docs/own-photos.md).
# Each part's limit: EXCEL_S (250), OPS_S (100), CRF_S (90), SCORING_S (60), CLIP_ES_S (120), ROUTE_S (400) seconds,
# and never past the budget. PARTS (default 1,2,3,4,5,6) names the parts to run (PARTS=6: the route's alone).
# The official SeCo's regularisation loss calls rloss's bilateralfilter extension, which this repository never
# builds: unless the call's own command built it onto the path, bench_op_count.py puts a stand-in in its place (it
# dispatches no operator, as the extension; it does none of the extension's host work), so the official time printed
# is then a lower bound of the official code's, and the ratio wsss / official an upper bound (op_count.log names the
# filter that ran).
#
# What travels (ignored by git, named in the call's `carry`):
#   .official/ExCEL, .official/CLIP-ES, .official/SeCo: `git archive` extractions at the recordings' commits, as
#       dev/device_official.sh's header says (SeCo at 202357f, without datasets/coco/cls_labels_onehot.npy, absent
#       from the stored snapshot and not read; about 15 MiB in all);
#   .whl: open_clip_torch, ftfy, wcwidth wheels (cp312 manylinux) and the pydensecrf2 sdist, built here in the
#       background for part 3 (the image has Cython and a compiler); .whl/official: ttach, texttable, imageio (the
#       official codes' datasets import it; about 3.3 MiB).
# tests/golden is needed by part 6 only with ROUTE_WEIGHTS=tiny (a dry run). $OUT receives at most 9 files:
# summary.log (every part's figures), excel_official.log, op_count.log, op_count.json, crf_overlap.log, scoring.log,
# clip_es_official.log, densecrf_build.log, route_modes.log.
#
#   there: bash dev/device_speed.sh "$OUT"
#   here:  DEVICE=cpu PYTHON=/work/main/.venv/bin/python DEPS=/tmp/i81deps COPIES=1 ITERS=1 SECO_ITERS=1 \
#          SECO_CROP=224 CRF_IMAGES=6 CRF_SIZE=160 SCORING_IMAGES=6 SCORING_SIZE=160 BUDGET=100000 \
#          bash dev/device_speed.sh /tmp/rehearse_speed
#   the route's part alone, a dry run here:
#          PARTS=6 DEVICE=cpu PYTHON=/work/main/.venv/bin/python ROUTE_PHOTOS=8 ROUTE_SIZE=64 ROUTE_WEIGHTS=tiny \
#          ROUTE_WORDS="run.device=cpu train.epochs=1 data.crop_size=64 clip.options.test_resize_long=64 \
#          clip.infer.resize_long=64" \
#          BUDGET=100000 bash dev/device_speed.sh /tmp/rehearse_route
set -u
OUT=${1:-/tmp/device_speed}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-500}
WORK=${WORK:-/tmp/b_speed}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:/tmp/site"
start=$(date +%s)
stamp() { echo "== $(($(date +%s) - start)) s: $*" | tee -a "$OUT/summary.log"; }
# the seconds a part may take: its own limit, or what is left of the budget (less 5 s), whichever is less
limit() {
    local left=$((BUDGET - ($(date +%s) - start) - 5))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
if [ "$DEVICE" = cuda ]; then
    nvidia-smi -L | tee -a "$OUT/summary.log"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
    # pydensecrf, for part 3: built while parts 1 and 2 run (one compiler process beside them)
    $PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/pydensecrf2-*.tar.gz \
        > "$OUT/densecrf_build.log" 2>&1 &
    build=$!
fi
OFFDEPS=/tmp/offdeps
$PY -m pip install -q --no-index --no-deps --no-compile --target $OFFDEPS .whl/official/*.whl 2>&1 | tail -2
if ! PYTHONPATH=$OFFDEPS $PY -c "import pkg_resources" 2>/dev/null; then
    mkdir -p $OFFDEPS/pkg_resources
    echo "import packaging.version  # noqa: F401  (the official clip/clip.py reads pkg_resources.packaging)" \
        > $OFFDEPS/pkg_resources/__init__.py
fi
DEPS=${DEPS:-$OFFDEPS:/tmp/site}
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee -a "$OUT/summary.log"
status=0
PARTS=${PARTS:-1,2,3,4,5,6}
part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if part 1; then
stamp "1. ExCEL: the training iteration and the training-free labels, official and wsss"
timeout "$(limit "${EXCEL_S:-250}")" $PY bench/bench_excel_official.py --official .official/ExCEL --deps "$DEPS" \
    --work "$WORK/excel" --device "$DEVICE" --copies "${COPIES:-4}" --rounds 1 --iters "${ITERS:-5}" \
    2>&1 | tee "$OUT/excel_official.log"
status=$((status || PIPESTATUS[0]))
grep -E "^(train iteration|training-free|wsss / official|pseudo labels)" "$OUT/excel_official.log" >> "$OUT/summary.log"
fi

if part 2; then
stamp "2. operator counts on $DEVICE (SeCo's and ExCEL's iterations), SeCo's iteration timed"
# --work $WORK: its excel/ is part 1's folder (weights, batch and the official bank made once)
timeout "$(limit "${OPS_S:-100}")" $PY bench/bench_op_count.py --work "$WORK" --excel .official/ExCEL --deps "$DEPS" \
    --device "$DEVICE" --units seco,excel_train --seco-crop "${SECO_CROP:-448}" --time "${SECO_ITERS:-10}" \
    $([ -d .official/SeCo ] && echo --seco .official/SeCo) --json "$OUT/op_count.json" --quiet 2>&1 \
    | tee "$OUT/op_count.log"
status=$((status || PIPESTATUS[0]))
grep -A8 "^op counts on" "$OUT/op_count.log" >> "$OUT/summary.log"
grep "^SeCo iteration, .*: median\|filter" "$OUT/op_count.log" >> "$OUT/summary.log"
fi

if part 3; then
stamp "3. wsss predict --crf against the plain prediction and the CRF alone"
[ "$DEVICE" = cuda ] && { wait $build; tail -2 "$OUT/densecrf_build.log"; }
timeout "$(limit "${CRF_S:-90}")" $PY bench/bench_crf_overlap.py --work "$WORK/crf" --images "${CRF_IMAGES:-150}" \
    --size "${CRF_SIZE:-448}" --device "$DEVICE" 2>&1 | tee "$OUT/crf_overlap.log"  # its JSON is in the log
status=$((status || PIPESTATUS[0]))
grep "^predict --crf" "$OUT/crf_overlap.log" >> "$OUT/summary.log"
fi

if part 4; then
stamp "4. wsss sweep-bkg and wsss eval per photo: $DEVICE beside the CPU"
timeout "$(limit "${SCORING_S:-60}")" $PY bench/bench_scoring.py --work "$WORK/scoring" \
    --synthetic "${SCORING_IMAGES:-100}" --size "${SCORING_SIZE:-448}" --device "$DEVICE" --rounds 1 2>&1 |
    tee "$OUT/scoring.log"
status=$((status || PIPESTATUS[0]))
grep -A30 " ms per photo" "$OUT/scoring.log" >> "$OUT/summary.log"
fi

if part 5 && [ "$(limit 100000)" -ge 90 ]; then
    stamp "5. CLIP-ES: the official generate_cams_voc12.py and wsss cam"
    timeout "$(limit "${CLIP_ES_S:-120}")" $PY bench/bench_clip_es_official.py --official .official/CLIP-ES \
        --deps "$DEPS" --work "$WORK/clip_es" --device "$DEVICE" --copies "${COPIES:-4}" --rounds 1 2>&1 |
        tee "$OUT/clip_es_official.log"
    status=$((status || PIPESTATUS[0]))
    grep -E "^(official|wsss|CAMs)" "$OUT/clip_es_official.log" >> "$OUT/summary.log"
elif part 5; then
    stamp "5. CLIP-ES: skipped, less than 90 s of the budget left"
fi

if part 6 && [ "$(limit 100000)" -ge 120 ]; then
    stamp "6. wsss route in each mode on synthetic photos"
    # shellcheck disable=SC2086  # ROUTE_WORDS: config words, one per word
    timeout "$(limit "${ROUTE_S:-400}")" $PY bench/bench_route_modes.py --out "$WORK/route" \
        --photos "${ROUTE_PHOTOS:-200}" --size "${ROUTE_SIZE:-320}" --weights "${ROUTE_WEIGHTS:-full}" --folds 0 \
        ${ROUTE_WORDS:-} 2>&1 | tee "$OUT/route_modes.log"
    status=$((status || PIPESTATUS[0]))
    grep -E '^\{"(weclip|clip|names|none)"' "$OUT/route_modes.log" >> "$OUT/summary.log"
elif part 6; then
    stamp "6. wsss route: skipped, less than 120 s of the budget left"
fi
stamp "done, status $status"
cat "$OUT/summary.log"
exit $status
