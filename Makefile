# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU wheel satisfies exactly this pin; an unpinned torch would pull GBs of CUDA.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test bench eval-rules lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	TRAINLENS_AUTO_MIGRATE=1 $(BIN)/trainlens serve

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

# Not part of `make test`: trains every scenario preset on the CPU (a few minutes), then
# replays the rule engine over each; prints the per-rule table.
eval-rules: install
	$(BIN)/python -m bench.eval_rules

lint: install
	$(BIN)/ruff check app trainer trainlens tests bench alembic
	$(BIN)/ruff format --check app trainer trainlens tests bench alembic
	$(BIN)/mypy app trainlens

clean:
	rm -rf $(VENV) var .pytest_cache
