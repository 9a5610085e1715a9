# The two front doors: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TIFFIN := $(VENV)/bin/tiffin
DEMO := demo-run

.PHONY: demo demo-video demo-speech demo-serve test test-long test-browser install clean espeak pretrain-speech pretrain-video \
	constraints bento docker-engine base-image container test-container

# constraints.txt pins every package to the set the tests passed with (see its header)
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# espeak-ng speaks the sentences of the speech tests, demos and recipes; installed with apt when
# missing and we are root. wamerican is the word list of the Scottish demo and the tiny-en recipe.
espeak:
	@command -v espeak-ng >/dev/null && [ -f /usr/share/dict/words ] || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq espeak-ng wamerican; } \
		|| { echo "needs espeak-ng and wamerican: apt-get install espeak-ng wamerican"; exit 1; }

# Two processes: one pytest process over the whole suite dies of SIGSEGV at about two thirds
# (reproduced twice, 2026-12-03). A core dump of it: the main thread asleep in subprocess.wait
# (tests/test_serve.py stopping its `tiffin serve` child), si_code SI_KERNEL, no address, and no
# faulthandler output: the kernel could not build a signal frame on the alternate signal stack,
# i.e. some native library left the process's sigaltstack pointing at freed memory, and the next
# handled signal killed it. Each half passes alone; which library does it is not found yet.
TESTS_FIRST := $(shell ls tests/test_*.py | LC_ALL=C sort | awk '$$0 < "tests/test_load.py"')
TESTS_REST := $(shell ls tests/test_*.py | LC_ALL=C sort | awk '$$0 >= "tests/test_load.py"')
test: $(VENV)/.installed espeak
	$(PY) -m pytest -q $(TESTS_FIRST)
	$(PY) -m pytest -q $(TESTS_REST)

# Every backbone family (tiny random configs of each, full-size torchvision video models) through
# train, export and serve: the matrix `make test` samples one front-end kind of.
test-families: $(VENV)/.installed espeak
	$(PY) -m pytest -q -m families

# Hours of audio in constant memory: two hours through the Python API and the CLI (make test runs 30 min).
test-long: $(VENV)/.installed espeak
	$(PY) -m pytest -q -m long

# The slower checks that drive a headless Chromium (installed here with apt when root).
test-browser: $(VENV)/.installed
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "test-browser needs chromium: apt-get install chromium"; exit 1; }
	$(PY) -m pytest -q -m browser

demo: demo-video demo-speech demo-serve

# Fine-tunes the embedded pretrained video model (tiffin/tiny-motion: x3d_xs pretrained on ten
# generated motion classes) on a task it was not pretrained on: shapes moving along the four
# diagonals. Three runs of the same length: freeze_unfreeze (the demo model), freeze (head
# only), and the same architecture from scratch; then their accuracy on unseen videos.
DIAGONALS := move_up_left,move_up_right,move_down_left,move_down_right
VIDEO_TRAIN = $(TIFFIN) train video --train-folder $(DEMO)/video/data --backbone tiffin/tiny-motion --no-flip \
	--batch-size 16 --max-epochs 8 --seed 0
demo-video: $(VENV)/.installed
	rm -rf $(DEMO)/video
	$(TIFFIN) synth video $(DEMO)/video/data --per-class 24 --seed 0 --classes $(DIAGONALS)
	$(TIFFIN) synth video $(DEMO)/video/unseen --per-class 6 --seed 99 --classes $(DIAGONALS)
	$(VIDEO_TRAIN) --strategy freeze_unfreeze --unfreeze-epoch 2 --learning-rate 1e-2 --out $(DEMO)/video/run
	$(VIDEO_TRAIN) --strategy freeze --learning-rate 1e-2 --out $(DEMO)/video/run-freeze
	$(VIDEO_TRAIN) --no-pretrained --learning-rate 3e-3 --out $(DEMO)/video/run-scratch
	@echo "accuracy on $$(ls $(DEMO)/video/unseen/*/* | wc -l) unseen videos of a task outside the pretraining classes:"
	@for run in run run-freeze run-scratch; do printf '%-12s ' $$run; \
		$(TIFFIN) evaluate $(DEMO)/video/$$run/checkpoints/best.ckpt $(DEMO)/video/unseen; done
	$(TIFFIN) predict $(DEMO)/video/run/checkpoints/best.ckpt $(DEMO)/video/unseen/*/*_000.* --top-k 2

# Adapts the embedded English speech model (tiffin/tiny-en, which never heard the Scottish voice)
# to espeak-ng's Scottish English: zero-shot CER on unseen Scottish sentences, a few minutes of
# fine-tuning on 300 others, the CER again.
SCOTTISH := en-gb-scotland,en-gb-scotland+m3,en-gb-scotland+f2,en-gb-scotland+m7,en-gb-scotland+f4
demo-speech: $(VENV)/.installed espeak
	rm -rf $(DEMO)/speech
	$(TIFFIN) synth speech $(DEMO)/speech/data --count 300 --seed 0 --voices $(SCOTTISH) --word-list /usr/share/dict/words
	$(TIFFIN) synth speech $(DEMO)/speech/unseen --count 40 --seed 99 --voices $(SCOTTISH) --word-list /usr/share/dict/words
	@printf 'zero-shot   '; $(TIFFIN) evaluate tiffin/tiny-en $(DEMO)/speech/unseen/train.csv
	$(TIFFIN) train speech --train-csv $(DEMO)/speech/data/train.csv --backbone tiffin/tiny-en \
		--learning-rate 5e-4 --batch-size 8 --max-epochs 6 --seed 0 --out $(DEMO)/speech/run
	@printf 'fine-tuned  '; $(TIFFIN) evaluate $(DEMO)/speech/run/checkpoints/best.ckpt $(DEMO)/speech/unseen/train.csv
	@# beam search over the dictionary words the sentences were drawn from (tiffin/ctc_beam.py)
	grep -E '^[a-z]{2,8}$$' /usr/share/dict/words | sort -u > $(DEMO)/speech/words.txt
	@printf 'fine-tuned, beam over the word list  '; $(TIFFIN) evaluate $(DEMO)/speech/run/checkpoints/best.ckpt \
		$(DEMO)/speech/unseen/train.csv --decoder beam --words $(DEMO)/speech/words.txt
	@# the word score chosen on 40 dev sentences (never the unseen ones), then scored on the unseen
	$(TIFFIN) synth speech $(DEMO)/speech/dev --count 40 --seed 98 --voices $(SCOTTISH) --word-list /usr/share/dict/words
	$(TIFFIN) evaluate $(DEMO)/speech/run/checkpoints/best.ckpt $(DEMO)/speech/dev/train.csv --decoder beam \
		--words $(DEMO)/speech/words.txt --tune > $(DEMO)/speech/tuned.json
	@printf 'fine-tuned, beam, word score tuned on dev  '; $(TIFFIN) evaluate $(DEMO)/speech/run/checkpoints/best.ckpt \
		$(DEMO)/speech/unseen/train.csv --decoder beam --words $(DEMO)/speech/words.txt \
		--word-score $$($(PY) -c "import json; print(json.load(open('$(DEMO)/speech/tuned.json'))['tuned']['word_score'])")
	@echo "greedy:"; $(TIFFIN) predict $(DEMO)/speech/run/checkpoints/best.ckpt $(DEMO)/speech/unseen/utt000[0-5].wav
	@echo "beam over the word list:"; $(TIFFIN) predict $(DEMO)/speech/run/checkpoints/best.ckpt \
		$(DEMO)/speech/unseen/utt000[0-5].wav --decoder beam --words $(DEMO)/speech/words.txt
	@echo "what was said:"; sed -n 2,7p $(DEMO)/speech/unseen/train.csv

# The recipes of the embedded models (not part of demo or test: about 40 min on 2 cores).
pretrain-speech: $(VENV)/.installed espeak
	@command -v text2wave >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq festival; }
	$(TIFFIN) pretrain speech --out runs/pretrain-speech --install

pretrain-video: $(VENV)/.installed
	$(TIFFIN) pretrain video --out runs/pretrain-video --install

# Exports both demo models to ONNX, times each on every runtime installed here and records the
# fastest that passes parity (`tiffin benchmark --record`), serves it with `tiffin serve`
# (BentoML, that runtime, no torch in the server) and asks it over HTTP about the unseen files,
# next to `tiffin predict`.
SERVE_PORT ?= 3077
demo-serve: $(VENV)/.installed
	@command -v curl > /dev/null || { echo "demo-serve needs curl: apt-get install curl"; exit 1; }
	$(TIFFIN) export $(DEMO)/video/run/checkpoints/best.ckpt --out $(DEMO)/video/onnx --force
	$(TIFFIN) export $(DEMO)/speech/run/checkpoints/best.ckpt --out $(DEMO)/speech/onnx --force
	@for task in video speech; do \
	  echo "== $$task: every runtime here, the fastest recorded"; \
	  $(TIFFIN) benchmark $(DEMO)/$$task/onnx --batch 1 --runs 5 --record || exit 1; \
	  if [ $$task = video ]; then api=classify; form="-F top_k=1 -F video"; files="$$(ls $(DEMO)/video/unseen/*/*_00[01].*)"; \
	  else api=transcribe; form="-F audio"; files="$$(ls $(DEMO)/speech/unseen/utt000[0-5].wav)"; fi; \
	  $(TIFFIN) serve $(DEMO)/$$task/onnx --port $(SERVE_PORT) > $(DEMO)/serve-$$task.log 2>&1 & pid=$$!; \
	  for i in $$(seq 120); do curl -sf localhost:$(SERVE_PORT)/readyz > /dev/null && break; sleep 0.5; done; \
	  echo "== $$task: tiffin predict, then POST /$$api"; \
	  $(TIFFIN) predict $(DEMO)/$$task/onnx $$files --top-k 1; \
	  for f in $$files; do printf '%s: ' $$f; curl -s $$form=@$$f localhost:$(SERVE_PORT)/$$api; echo; done; \
	  kill $$pid; wait $$pid 2> /dev/null; \
	done

# Re-pin after changing pyproject.toml: a fresh venv resolves the extras, constraints.txt records it.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin && .venv-pin/bin/pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; .venv-pin/bin/pip freeze --exclude-editable | grep -v '^tiffin' | sort -f; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin

# A plain `bentoml build` of bentofile.yaml: the serving wheel first, then the video service over
# the latest stored tiffin-video model (`tiffin build ARTIFACT` does all of it for one artifact).
bento: $(VENV)/.installed
	$(PY) -m tiffin.serve.wheel dist/serving
	$(VENV)/bin/bentoml build

# --- containers (not part of demo or test: they need a Docker engine) ---------------------------
# Docker from Debian's packages when missing, its daemon started when not running (both as root).
docker-engine:
	@command -v dockerd > /dev/null && command -v debootstrap > /dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq docker.io debootstrap curl; } || \
		{ echo "needs Docker: apt-get install docker.io debootstrap (as root)"; exit 1; }
	@docker version --format '{{.Server.Version}}' > /dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		{ (nohup dockerd > /var/log/tiffin-dockerd.log 2>&1 &); for i in $$(seq 120); do \
		  docker version > /dev/null 2>&1 && break; sleep 0.5; done; }; }
	@docker version --format 'Docker engine {{.Server.Version}}' || { echo "dockerd did not start: /var/log/tiffin-dockerd.log"; exit 1; }

# The base image bentos build on: BentoML's python:3.11-slim when it can be pulled, else one made
# from Debian's own packages (debootstrap, about a minute; kept for later builds).
base-image: $(VENV)/.installed docker-engine
	$(PY) -m tiffin.serve.container base-image

# The embedded video and speech models exported to ONNX, each built into an image with `tiffin
# build --containerize`, run, and asked over HTTP next to `tiffin predict`; then the container
# checks (tests/test_container.py: torch-free, non-root, healthcheck, drain at docker stop).
CONTAINER := $(DEMO)/container
CONTAINER_PORT ?= 3088
container: $(VENV)/.installed docker-engine espeak
	rm -rf $(CONTAINER)
	mkdir -p $(CONTAINER) && $(PY) -m tiffin.serve.container base-image > $(CONTAINER)/base-image
	$(TIFFIN) synth video $(CONTAINER)/video/media --per-class 1 --seed 5 --classes move_left,move_right,grow,shrink
	$(TIFFIN) synth speech $(CONTAINER)/speech/media --count 3 --seed 5
	$(TIFFIN) export tiffin/tiny-motion --out $(CONTAINER)/video/onnx
	$(TIFFIN) export tiffin/tiny-en --out $(CONTAINER)/speech/onnx
	@for task in video speech; do \
	  if [ $$task = video ]; then api=classify; form="-F top_k=1 -F video"; files="$$(ls $(CONTAINER)/video/media/*/*)"; \
	  else api=transcribe; form="-F audio"; files="$$(ls $(CONTAINER)/speech/media/*.wav)"; fi; \
	  $(TIFFIN) build $(CONTAINER)/$$task/onnx --containerize --base-image "$$(tail -1 $(CONTAINER)/base-image)" \
	    --image-tag tiffin-demo-$$task:latest || exit 1; \
	  docker rm -f tiffin-demo-$$task > /dev/null 2>&1; \
	  docker run -d --name tiffin-demo-$$task -p 127.0.0.1:$(CONTAINER_PORT):3000 tiffin-demo-$$task:latest > /dev/null; \
	  for i in $$(seq 240); do curl -sf localhost:$(CONTAINER_PORT)/readyz > /dev/null && break; sleep 0.5; done; \
	  echo "== $$task: tiffin predict, then POST /$$api to the container"; \
	  $(TIFFIN) predict $(CONTAINER)/$$task/onnx $$files --top-k 1; \
	  for f in $$files; do printf '%s: ' $$f; curl -s $$form=@$$f localhost:$(CONTAINER_PORT)/$$api; echo; done; \
	  docker stop -t 60 tiffin-demo-$$task > /dev/null; docker rm tiffin-demo-$$task > /dev/null; \
	done
	TIFFIN_BASE_IMAGE="$$(tail -1 $(CONTAINER)/base-image)" $(MAKE) test-container

# The container checks alone (a Docker engine and a base image: `make base-image`).
test-container: $(VENV)/.installed
	$(PY) -m pytest -q -m docker

clean:
	rm -rf $(VENV) $(DEMO)
