# The two commands a newcomer needs: `make run` (set up, then run the quickstart search on
# scikit-learn's digits, CPU, a few minutes) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tests also cover the optional extras (the Ray executor on a local Ray instance).
EXTRAS_STAMP := $(VENV)/.installed-extras

.PHONY: run test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(EXTRAS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,tensorboard,mlflow,onnx]'
	touch $(EXTRAS_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/nasreg run specs/quickstart.toml

test: $(EXTRAS_STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
