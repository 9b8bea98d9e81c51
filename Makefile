# Every target builds .venv first; nothing relies on what happens to be installed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MODEL_DIR ?= models
SAMPLES ?= ../shared/data/imagenet-sample
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: serve test test-fast export export-fast bench bench-accuracy bench-cost bench-frontier bench-serve bench-batch bench-faithfulness bench-faithfulness-fast bench-load bench-hostile bench-soak bench-fairness bench-models bench-training bench-protocols lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,train,bench,dev,gcs,beam]'
	touch $@

# The SavedModel is built once and reused. Always asked: it keeps an export that has every
# signature and redoes one made by an older exporter (a file-exists rule could not tell).
export: | $(VENV)/.installed
	$(BIN)/glimpse export --model-dir $(MODEL_DIR) --if-missing

# The service on 127.0.0.1:8080 (PORT changes it) with the embedded backend.
# Batch jobs posted to the jobs API may use local paths under this folder; their state
# survives restarts in .glimpse/.
serve: export
	GLIMPSE_MODEL_DIR=$(MODEL_DIR) GLIMPSE_JOBS_DB=.glimpse/jobs.sqlite3 \
	GLIMPSE_JOBS_LOCAL_ROOT=$(CURDIR) $(BIN)/glimpse serve

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The fast tier (marker `fast`): every protocol's adapter and the data plane over a fake
# backend, no TensorFlow model, under a minute.
test-fast: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m fast

bench: bench-accuracy bench-cost bench-frontier bench-serve bench-batch bench-faithfulness bench-faithfulness-fast bench-load bench-hostile \
	bench-fairness bench-models bench-training bench-protocols
	$(BIN)/python -m bench.report

bench-accuracy: export
	$(BIN)/python -m bench.accuracy --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# The cost frontier's cheapest point (docs/model.md), served beside the default when wanted:
# where pass at 96 px, a 160-px canvas.
export-fast: | $(VENV)/.installed
	$(BIN)/glimpse export --model-dir $(MODEL_DIR) --name saccader-fast --where-size 96 \
		--canvas-size 160 --if-missing

bench-cost: export export-fast
	$(BIN)/python -m bench.cost --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# Where-pass resolution x canvas size: explained / plain, glimpse top-1, distinctness, and
# the explained path's parts (docs/model.md's frontier table).
bench-frontier: export
	$(BIN)/python -m bench.frontier --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

bench-serve: export
	$(BIN)/python -m bench.serve --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

bench-faithfulness: export
	$(BIN)/python -m bench.faithfulness --model-dir $(MODEL_DIR) --images $(SAMPLES) --limit 200 --slow-limit 64 \
		--out bench/results

# The same for the cheaper option's glimpses (the post-hoc methods do not change: they explain
# the same full-image classifier), slow methods on 8 photos only, no PIC: about 15 minutes.
bench-faithfulness-fast: export-fast
	$(BIN)/python -m bench.faithfulness --model-dir $(MODEL_DIR) --model-name saccader-fast --images $(SAMPLES) \
		--limit 200 --slow-limit 8 --pic-limit 0 --out bench/results

bench-batch: export
	$(BIN)/python -m bench.batch --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# >= 10,000 :predict requests at concurrency 32 on a live gateway, then an overload burst.
bench-load: export
	$(BIN)/python -m bench.load --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# Good traffic with 10% decode bombs vs clean, at concurrency 16: p99, probes, RSS.
bench-hostile: export
	$(BIN)/python -m bench.hostile --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# 30 minutes of mixed traffic (:predict at 1, 4 and 16 photos, every :explain method, tensor
# form, Vertex, v2, jobs, 10% bombs) at concurrency 16: 5xx, p99 drift, probes, RSS. Not in
# `bench` (too long).
bench-soak: export
	$(BIN)/python -m bench.soak --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# A one-photo :predict (p99 <= 500 ms) and /healthz/live (< 100 ms) beside four 64-photo x
# 16-box serving_boxes requests, with tensor pieces of 4 rows and of 64 (no pieces).
bench-fairness: export
	$(BIN)/python -m bench.fairness --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

# Gateway RSS with 1, 2 and 4 copies of the model served: <= 400 MB per extra model.
bench-models: export
	$(BIN)/python -m bench.models --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

bench-protocols: export
	$(BIN)/python -m bench.protocols --model-dir $(MODEL_DIR) --images $(SAMPLES) --out bench/results

bench-training: $(VENV)/.installed
	$(BIN)/python -m bench.training --images $(SAMPLES) --out bench/results

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(MODEL_DIR) .pytest_cache
