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
# Variable $(1) exactly as written (make would expand a `$x` inside it), plus $(2), shell-quoted; an
# empty one stops make with its name rather than become an empty or root path.
arg = $(if $(strip $(value $(1))),$(call quote,$(value $(1))$(2)),$(error $(1) is empty: give it a value, e.g. $(1)=...))

.PHONY: install proto test test-gpu selfcheck train-all demo convert check-voc prototxt reproduce-table1 reproduce-table2 reproduce-tables train train-base reproduce-baselines bench clean

# Re-installs when setup.py changes; torch is pinned there to the local CPU wheel.
$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[test,export]'
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
GOLDEN_TESTS = tests/weights_convert/layers/test_layers_golden.py tests/weights_convert/oslsm/test_oslsm_model.py tests/weights_convert/train/test_train_golden.py \
               tests/weights_convert/layers/test_standard_layers.py tests/weights_convert/train/test_solvers_golden.py tests/weights_convert/test_model_zoo.py
test-gpu: $(SETUP)
	$(PY) -m pytest -q --device $(if $(filter cpu,$(DEVICE)),cuda,$(call arg,DEVICE)) $(GOLDEN_TESTS)

# Prove DEVICE against the real Caffe's outputs, then time it (results/selfcheck/selfcheck.json).
selfcheck: $(SETUP)
	$(PY) -m weights_convert selfcheck --device $(call arg,DEVICE) --out $(call arg,RESULTS,/selfcheck)

demo: install
	$(PY) -m reproduce demo --out $(call arg,RESULTS,/demo)

# Convert the four fold models: MODELS=dir (names containing fold0..fold3) or FOLD0=.. FOLD3=..
convert: install
	$(PY) -m reproduce convert-folds --models $(call arg,MODELS) \
	  $(if $(value FOLD0),--fold0 $(call arg,FOLD0)) $(if $(value FOLD1),--fold1 $(call arg,FOLD1)) \
	  $(if $(value FOLD2),--fold2 $(call arg,FOLD2)) $(if $(value FOLD3),--fold3 $(call arg,FOLD3)) \
	  $(if $(value PROTOTXT),--prototxt $(call arg,PROTOTXT)) --out $(call arg,RESULTS,/models)

# Before a long run: does VOC give the original's episode lists? (exit 0 only when all 8 are identical)
check-voc: install
	$(PY) -m reproduce check-voc --voc $(call arg,VOC)

prototxt: install
	$(PY) -m weights_convert netspec --out prototxt

reproduce-table1: install
	$(PY) -m reproduce table-run --table 1 --voc $(call arg,VOC) --models $(call arg,MODELS) \
	  $(if $(value PROTOTXT),--prototxt $(call arg,PROTOTXT)) --episodes $(call arg,EPISODES) \
	  --device $(call arg,DEVICE) --out $(call arg,RESULTS)

reproduce-table2: install
	$(PY) -m reproduce table-run --table 2 --voc $(call arg,VOC) --models $(call arg,MODELS) \
	  $(if $(value PROTOTXT),--prototxt $(call arg,PROTOTXT)) --episodes $(call arg,EPISODES) \
	  --device $(call arg,DEVICE) --out $(call arg,RESULTS)

# Both tables in one pass over each fold's episodes (every query's features computed once).
reproduce-tables: install
	$(PY) -m reproduce table-run --table 1 2 --voc $(call arg,VOC) --models $(call arg,MODELS) \
	  $(if $(value PROTOTXT),--prototxt $(call arg,PROTOTXT)) --episodes $(call arg,EPISODES) \
	  --device $(call arg,DEVICE) --out $(call arg,RESULTS)

# Re-train one fold's model as the authors did: SBD in the VOC layout (python -m reproduce sbd-to-voc),
# a start model (python -m reproduce make-init), the upstream train net and solver; 60,000 iterations
# (the released snapshots') unless ITERS says otherwise.
FOLD ?= 0
SBD ?= data/SBD_VOC
INIT ?= data/models/oslsm_init.caffemodel
ITERS ?=
train: install
	$(PY) -m reproduce train --fold $(call arg,FOLD) --voc $(call arg,VOC) --sbd $(call arg,SBD) \
	  --init $(call arg,INIT) $(if $(value ITERS),--iters $(call arg,ITERS)) --device $(call arg,DEVICE) \
	  --out $(call arg,RESULTS,/train/fold$(value FOLD))

# Every fold at once: one process per fold, queued on DEVICES (e.g. cuda:0,cuda:1); RANKS devices per fold.
FOLDS ?= 0,1,2,3
DEVICES ?=
RANKS ?= 1
train-all: install
	$(PY) -m reproduce train-all --voc $(call arg,VOC) --sbd $(call arg,SBD) --init $(call arg,INIT) \
	  --folds $(call arg,FOLDS) --devices $(if $(value DEVICES),$(call arg,DEVICES),$(call arg,DEVICE)) --ranks-per-fold $(call arg,RANKS) \
	  $(if $(value ITERS),--iters $(call arg,ITERS)) --out $(call arg,RESULTS,/train)

# The paper's baselines: a base net per fold (FCN-32s, 16-way, FCN's recipe from ImageNet VGG-16),
# then both tables with 1-NN, LogReg and fine-tuning as rows on the same episodes (docs/baselines.md).
VGG16 ?= data/models/VGG_ILSVRC_16_layers.caffemodel
# (default: RESULTS/train/base_models, where train-base and `train-all --base-nets` publish them)
BASE_MODELS ?=
base_models = $(if $(value BASE_MODELS),$(call arg,BASE_MODELS),$(call arg,RESULTS,/train/base_models))
BASELINES ?= 1nn,logreg,finetune
train-base: install
	$(PY) -m reproduce train-base --fold $(call arg,FOLD) --voc $(call arg,VOC) --sbd $(call arg,SBD) \
	  --vgg16 $(call arg,VGG16) $(if $(value ITERS),--iters $(call arg,ITERS)) --device $(call arg,DEVICE) \
	  --out $(call arg,RESULTS,/train/base/fold$(value FOLD)) --publish $(base_models)

reproduce-baselines: install
	$(PY) -m reproduce table-run --table 1 2 --voc $(call arg,VOC) --models $(call arg,MODELS) \
	  $(if $(value PROTOTXT),--prototxt $(call arg,PROTOTXT)) --episodes $(call arg,EPISODES) \
	  --device $(call arg,DEVICE) --out $(call arg,RESULTS) --baselines $(call arg,BASELINES) \
	  --base-models $(base_models)

bench: install
	$(PY) bench/convert_bench.py
	$(PY) bench/eval_bench.py
	$(PY) bench/query_forward_bench.py --demo
	$(PY) bench/train_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
