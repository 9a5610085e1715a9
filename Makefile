# The two front doors: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TIFFIN := $(VENV)/bin/tiffin
DEMO := demo-run

.PHONY: demo demo-video demo-speech demo-serve test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: demo-video demo-speech demo-serve

# Generates a synthetic action dataset (shapes moving in four directions, written with
# PyAV in four containers), fine-tunes x3d_xs on it on the CPU and predicts unseen videos.
demo-video: $(VENV)/.installed
	rm -rf $(DEMO)/video
	$(TIFFIN) synth video $(DEMO)/video/data --per-class 32 --seed 0
	$(TIFFIN) synth video $(DEMO)/video/unseen --per-class 2 --seed 99
	$(TIFFIN) train video --train-folder $(DEMO)/video/data --backbone x3d_xs --no-pretrained \
		--num-frames 8 --crop-size 64 --clip-duration 1.6 --no-flip --batch-size 16 \
		--max-epochs 30 --learning-rate 3e-3 --seed 0 --out $(DEMO)/video/run
	$(TIFFIN) predict $(DEMO)/video/run/checkpoints/best.ckpt $(DEMO)/video/unseen/*/*.* --top-k 2 --clips 3

# Speaks 400 sentences with espeak-ng (installed here if missing and we are root), trains the
# small wav2vec2 CTC config on them on the CPU and transcribes sentences it never heard.
demo-speech: $(VENV)/.installed
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq espeak-ng; } \
		|| { echo "demo-speech needs espeak-ng: apt-get install espeak-ng"; exit 1; }
	rm -rf $(DEMO)/speech
	$(TIFFIN) synth speech $(DEMO)/speech/data --count 400 --seed 0
	$(TIFFIN) synth speech $(DEMO)/speech/unseen --count 6 --seed 99
	$(TIFFIN) train speech --train-csv $(DEMO)/speech/data/train.csv --backbone tiffin/wav2vec2-tiny \
		--learning-rate 1e-3 --batch-size 8 --max-epochs 25 --seed 0 --out $(DEMO)/speech/run
	$(TIFFIN) predict $(DEMO)/speech/run/checkpoints/best.ckpt $(DEMO)/speech/unseen/*.wav
	@echo "what was said:"; tail -n +2 $(DEMO)/speech/unseen/train.csv

# Exports both demo models to ONNX, serves each with `tiffin serve` (BentoML, ONNX Runtime, no
# torch in the server) and asks it over HTTP about the unseen files, next to `tiffin predict`.
SERVE_PORT ?= 3077
demo-serve: $(VENV)/.installed
	@command -v curl > /dev/null || { echo "demo-serve needs curl: apt-get install curl"; exit 1; }
	$(TIFFIN) export $(DEMO)/video/run/checkpoints/best.ckpt --out $(DEMO)/video/onnx --force
	$(TIFFIN) export $(DEMO)/speech/run/checkpoints/best.ckpt --out $(DEMO)/speech/onnx --force
	@for task in video speech; do \
	  if [ $$task = video ]; then api=classify; form="-F top_k=1 -F video"; files="$$(ls $(DEMO)/video/unseen/*/*.*)"; \
	  else api=transcribe; form="-F audio"; files="$$(ls $(DEMO)/speech/unseen/*.wav)"; fi; \
	  $(TIFFIN) serve $(DEMO)/$$task/onnx --port $(SERVE_PORT) > $(DEMO)/serve-$$task.log 2>&1 & pid=$$!; \
	  for i in $$(seq 120); do curl -sf localhost:$(SERVE_PORT)/readyz > /dev/null && break; sleep 0.5; done; \
	  echo "== $$task: tiffin predict, then POST /$$api"; \
	  $(TIFFIN) predict $(DEMO)/$$task/onnx $$files --top-k 1; \
	  for f in $$files; do printf '%s: ' $$f; curl -s $$form=@$$f localhost:$(SERVE_PORT)/$$api; echo; done; \
	  kill $$pid; wait $$pid 2> /dev/null; \
	done

clean:
	rm -rf $(VENV) $(DEMO)
