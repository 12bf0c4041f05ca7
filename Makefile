# Quick start on a fresh machine:
#   make demo   dub the bundled English sample with the offline default stages
#   make test   run the test suite
# Both set up .venv first (system packages through apt-get where available).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= all,test,dev

.PHONY: demo test lint typecheck bench lock lock-upgrade clean

$(STAMP): pyproject.toml requirements.lock .ci/setup
	bash .ci/setup $(VENV) $(EXTRAS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stsdub dub examples/sample_en.flac -o out/sample_dubbed.wav --from en --to es

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/nox -s benchmarks

# requirements.lock pins every package of every extra, for each supported Python and platform.
# `make lock` re-resolves after pyproject.toml changed, keeping the pins it can;
# `make lock-upgrade` moves everything to the newest versions pyproject.toml allows.
LOCK_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --extra all --extra test --extra dev \
	-c .ci/constraints.txt --universal --python-version 3.10 --custom-compile-command "make lock" \
	-o requirements.lock

lock: $(STAMP)
	$(LOCK_COMPILE)

lock-upgrade: $(STAMP)
	$(LOCK_COMPILE) --upgrade

clean:
	rm -rf $(VENV) out .nox
