#!/usr/bin/env bash
# The checks a session lent a GPU machine runs there (the tool library's `device`; BENCHMARKS.md, "The CUDA
# paths on an H200"): the CUDA tests (tests/cuda/, skipped where no GPU is) and the GPU benchmark
# (bench/bench_gpu.py). The machine's image has PyTorch, timm and the rest, and no registry; what it lacks
# travels in .whl/ (ignored by git, carried by the call): the open_clip, ftfy and wcwidth wheels, and the
# pydensecrf2 sdist, built there (it has Cython and a compiler).
#   here:  pip download --no-deps ... -d .whl open_clip_torch ftfy wcwidth; pip download --no-binary=:all: -d .whl pydensecrf2
#   there: bash dev/device_check.sh "$OUT"     (the call carries .whl; BENCH=0: the tests only)
set -u
OUT=${1:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:/tmp/site"
nvidia-smi -L
python3 -c 'import torch, torchvision, timm; print("torch", torch.__version__, "torchvision", torchvision.__version__,
"timm", timm.__version__, torch.cuda.get_device_name())'
if [ -d .whl ] && ! python3 -c 'import pydensecrf.densecrf, open_clip' 2>/dev/null; then  # not installed yet
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -2
    ls .whl/pydensecrf2-*.tar.gz >/dev/null 2>&1 &&
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/pydensecrf2-*.tar.gz \
            > "$OUT/densecrf_build.log" 2>&1
fi
python3 -c 'import pydensecrf.densecrf, open_clip; print("pydensecrf and open_clip import")'
set -o pipefail
python3 -m pytest tests/cuda -p no:randomly -p no:cacheprovider -s -rs 2>&1 | tee "$OUT/cuda_tests.log" | grep -v '^  '
tests=$?
bench=0
if [ "${BENCH:-1}" != 0 ]; then
    python3 bench/bench_gpu.py --out /tmp/bench_gpu --images 200 2>&1 | tee "$OUT/bench_gpu.log" | tail -40
    bench=$?
fi
echo "tests rc $tests, bench rc $bench"
exit $((tests || bench))
