#!/usr/bin/env bash
# The official CLIP-ES and ExCEL codes beside wsss on one GPU, then the CUDA tests, in one call of the tool
# library's `device` (BENCHMARKS.md, "The official codes beside wsss on an H100"; issue 60). Rehearsed on the CPU
# first (DEVICE=cpu, below), so that the GPU call finds no typo.
#
# What travels with the call (both ignored by git through .git/info/exclude, named in the call's `carry`):
#   .official/CLIP-ES, .official/ExCEL: `git archive` extractions of the official repositories at the commits
#       the recordings used (tests/golden/README.md), unmodified; the files no step reads are left out, to stay
#       under the call's 64 MiB:
#       git -C MIRROR/linyq2117+CLIP-ES archive 3893f81 -- . ':!coco14' ':!CLIP-ES.png' | tar -x -C .official/CLIP-ES
#       git -C MIRROR/zwyang6+ExCEL archive 2cd7f51 -- . ':!datasets/coco/cls_labels_onehot.npy' \
#           ':!datasets/voc/cls_labels_onehot.npy' ':!datasets/voc/train_aug.txt' ':!sources' ':!logs' \
#           | tar -x -C .official/ExCEL
#       (the snapshot lacks the blob of datasets/coco/cls_labels_onehot.npy: name it, ':!datasets/coco' is not enough
#       for git 2.39's archive); rm .official/ExCEL/attributes_text/*ms_coco* .official/CLIP-ES/voc12/train_aug.txt
#       keeps the call under 64 MiB (read by no step)
#   .whl: what the GPU image lacks (dev/device_check.sh) and, in .whl/official, the official codes' own
#       dependencies (ttach, texttable); a `pkg_resources` of two lines stands in where the image's setuptools
#       has none (the official `clip/clip.py` imports only `packaging` from it).
#
#   there: bash dev/device_official.sh "$OUT"
#   here:  DEVICE=cpu PYTHON=.venv/bin/python DEPS=/tmp/rehearse-deps bash dev/device_official.sh /tmp/rehearse
set -u
OUT=${1:-/tmp/device_official}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:/tmp/site"
start=$(date +%s)
stamp() { echo "== $(($(date +%s) - start)) s: $*"; }
TESTS=${TESTS:-1}  # 0: the benchmarks alone
[ "$DEVICE" = cuda ] || TESTS=0
if [ "$DEVICE" = cuda ]; then
    nvidia-smi -L
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
fi
if [ "$TESTS" != 0 ]; then
    # DenseCRF, for the CUDA tests at the end: built beside the benchmarks (the machine has 16 cores)
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
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
status=0

stamp "ExCEL: the official training-free labels and training iteration, and wsss's"
timeout "${EXCEL_S:-200}" $PY bench/bench_excel_official.py --official .official/ExCEL --deps "$DEPS" \
    --work /tmp/b_excel --device "$DEVICE" --copies "${COPIES:-16}" --rounds "${ROUNDS:-1}" --iters "${ITERS:-10}" \
    --profile "${PROFILE:-0}" 2>&1 | tee "$OUT/excel_official.log"
status=$((status || PIPESTATUS[0]))

stamp "CLIP-ES: the official generate_cams_voc12.py and wsss cam"
timeout "${CLIP_ES_S:-150}" $PY bench/bench_clip_es_official.py --official .official/CLIP-ES --deps "$DEPS" \
    --work /tmp/b_clip_es --device "$DEVICE" --copies "${COPIES:-16}" --rounds "${ROUNDS:-1}" 2>&1 |
    tee "$OUT/clip_es_official.log"
status=$((status || PIPESTATUS[0]))

if [ "$TESTS" != 0 ]; then
    wait $build
    stamp "the CUDA tests"
    BENCH=0 timeout "${TESTS_S:-150}" bash dev/device_check.sh "$OUT"
    status=$((status || $?))
fi
stamp "done, status $status"
exit $status
