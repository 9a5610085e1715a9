# The two front doors: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TIFFIN := $(VENV)/bin/tiffin
DEMO := demo-run

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Generates a synthetic action dataset (shapes moving in four directions, written with
# PyAV in three codecs), fine-tunes x3d_xs on it on the CPU and predicts held-out videos.
demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(TIFFIN) synth video $(DEMO)/data --per-class 32 --seed 0
	$(TIFFIN) synth video $(DEMO)/unseen --per-class 2 --seed 99
	$(TIFFIN) train video --train-folder $(DEMO)/data --backbone x3d_xs --no-pretrained \
		--num-frames 8 --crop-size 64 --clip-duration 1.6 --no-flip --batch-size 16 \
		--max-epochs 30 --learning-rate 3e-3 --seed 0 --out $(DEMO)/run
	$(TIFFIN) predict $(DEMO)/run/checkpoints/best.ckpt $(DEMO)/unseen/*/*.* --top-k 2 --clips 3

clean:
	rm -rf $(VENV) $(DEMO)
