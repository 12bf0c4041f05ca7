# Quick start on a fresh machine:
#   make demo   dub the bundled English sample with the offline default stages
#   make test   run the test suite
# Both set up .venv first (system packages through apt-get where available).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= all,test,dev

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml .ci/constraints.txt .ci/setup
	bash .ci/setup $(VENV) $(EXTRAS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stsdub dub examples/sample_en.flac -o out/sample_dubbed.wav --from en --to en

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/nox -s benchmarks

clean:
	rm -rf $(VENV) out .nox
