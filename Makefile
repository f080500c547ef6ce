# oslsm-repro. `make install` once, then `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

# Users' inputs (see README): the authors' four caffemodels and VOC2012.
MODELS ?= data/models
VOC    ?= data/VOC2012
RESULTS ?= results
EPISODES ?= 1000
DEVICE ?= cpu
# numpy's OpenBLAS kernels that reproduce the original's resize bits (see reproduce/__init__.py).
export OPENBLAS_CORETYPE ?= Haswell
# Deploy net the caffemodels are checked against (empty: the project's prototxt/deploy_1shot.prototxt).
PROTOTXT ?=

# Shell-quotes a value so that any path works (spaces, quotes, unicode): '...' with each ' as '"'"'.
quote = '$(subst ','"'"',$(1))'

.PHONY: install proto test test-gpu selfcheck train-all demo convert check-voc prototxt reproduce-table1 reproduce-table2 reproduce-tables train bench clean

# Re-installs when setup.py changes; torch is pinned there to the local CPU wheel.
$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Regenerate the protobuf module from our schema (needs grpcio-tools).
proto: install
	$(PY) -m grpc_tools.protoc -Iweights_convert/proto --python_out=weights_convert/proto weights_convert/proto/caffe.proto

test: install
	$(PY) -m pytest -q

# The golden layer, net, module, gradient and solver tests on a GPU (fails in one line without one).
# GPU users keep their own CUDA build of torch: `make test-gpu PY=python3` uses it, installing nothing.
SETUP := $(if $(filter command line,$(origin PY)),,install)
GOLDEN_TESTS = tests/test_layers_golden.py tests/test_oslsm_model.py tests/test_train_golden.py \
               tests/test_standard_layers.py tests/test_solvers_golden.py tests/test_model_zoo.py
test-gpu: $(SETUP)
	$(PY) -m pytest -q --device $(if $(filter cpu,$(DEVICE)),cuda,$(call quote,$(DEVICE))) $(GOLDEN_TESTS)

# Prove DEVICE against the real Caffe's outputs, then time it (results/selfcheck/selfcheck.json).
selfcheck: $(SETUP)
	$(PY) -m weights_convert selfcheck --device $(call quote,$(DEVICE)) --out $(call quote,$(RESULTS)/selfcheck)

demo: install
	$(PY) -m reproduce demo --out $(call quote,$(RESULTS)/demo)

# Convert the four fold models: MODELS=dir (names containing fold0..fold3) or FOLD0=.. FOLD3=..
convert: install
	$(PY) -m reproduce convert-folds --models $(call quote,$(MODELS)) \
	  $(if $(FOLD0),--fold0 $(call quote,$(FOLD0))) $(if $(FOLD1),--fold1 $(call quote,$(FOLD1))) \
	  $(if $(FOLD2),--fold2 $(call quote,$(FOLD2))) $(if $(FOLD3),--fold3 $(call quote,$(FOLD3))) \
	  $(if $(PROTOTXT),--prototxt $(call quote,$(PROTOTXT))) --out $(call quote,$(RESULTS)/models)

# Before a long run: does VOC give the original's episode lists? (exit 0 only when all 8 are identical)
check-voc: install
	$(PY) -m reproduce check-voc --voc $(call quote,$(VOC))

prototxt: install
	$(PY) -m weights_convert netspec --out prototxt

reproduce-table1: install
	$(PY) -m reproduce table-run --table 1 --voc $(call quote,$(VOC)) --models $(call quote,$(MODELS)) \
	  $(if $(PROTOTXT),--prototxt $(call quote,$(PROTOTXT))) --episodes $(call quote,$(EPISODES)) \
	  --device $(call quote,$(DEVICE)) --out $(call quote,$(RESULTS))

reproduce-table2: install
	$(PY) -m reproduce table-run --table 2 --voc $(call quote,$(VOC)) --models $(call quote,$(MODELS)) \
	  $(if $(PROTOTXT),--prototxt $(call quote,$(PROTOTXT))) --episodes $(call quote,$(EPISODES)) \
	  --device $(call quote,$(DEVICE)) --out $(call quote,$(RESULTS))

# Both tables in one pass over each fold's episodes (every query's features computed once).
reproduce-tables: install
	$(PY) -m reproduce table-run --table 1 2 --voc $(call quote,$(VOC)) --models $(call quote,$(MODELS)) \
	  $(if $(PROTOTXT),--prototxt $(call quote,$(PROTOTXT))) --episodes $(call quote,$(EPISODES)) \
	  --device $(call quote,$(DEVICE)) --out $(call quote,$(RESULTS))

# Re-train one fold's model as the authors did: SBD in the VOC layout (python -m reproduce sbd-to-voc),
# a start model (python -m reproduce make-init), the upstream train net and solver; 60,000 iterations
# (the released snapshots') unless ITERS says otherwise.
FOLD ?= 0
SBD ?= data/SBD_VOC
INIT ?= data/models/oslsm_init.caffemodel
ITERS ?=
train: install
	$(PY) -m reproduce train --fold $(call quote,$(FOLD)) --voc $(call quote,$(VOC)) --sbd $(call quote,$(SBD)) \
	  --init $(call quote,$(INIT)) $(if $(ITERS),--iters $(call quote,$(ITERS))) --device $(call quote,$(DEVICE)) \
	  --out $(call quote,$(RESULTS)/train/fold$(FOLD))

# Every fold at once: one process per fold, queued on DEVICES (e.g. cuda:0,cuda:1); RANKS devices per fold.
FOLDS ?= 0,1,2,3
DEVICES ?= $(DEVICE)
RANKS ?= 1
train-all: install
	$(PY) -m reproduce train-all --voc $(call quote,$(VOC)) --sbd $(call quote,$(SBD)) --init $(call quote,$(INIT)) \
	  --folds $(call quote,$(FOLDS)) --devices $(call quote,$(DEVICES)) --ranks-per-fold $(call quote,$(RANKS)) \
	  $(if $(ITERS),--iters $(call quote,$(ITERS))) --out $(call quote,$(RESULTS)/train)

bench: install
	$(PY) bench/convert_bench.py
	$(PY) bench/eval_bench.py
	$(PY) bench/query_forward_bench.py --demo
	$(PY) bench/train_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
