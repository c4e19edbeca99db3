# Parley: the two commands a new user needs.
#   make serve   set up .venv and run the server on http://127.0.0.1:8080
#   make test    set up .venv and run every test (inside a loopback-only network namespace)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: serve test lint bench clean typecheck-web

# sfu/_native.c, sfu/_ingress.c, sfu/_recv.c: pip builds the C forwarding loop, the
# ingress and the load generator's reader in place (sfu/_native.*.so, sfu/_recv.*.so)
$(VENV)/.installed: pyproject.toml sfu/_native.c sfu/_ingress.c sfu/_feedback.c sfu/_native.h sfu/_recv.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/parley serve --host 127.0.0.1 --port 8080

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# libwebrtc for Node (@roamhq/wrtc) for tests/interop/test_libwebrtc.py, pinned by its
# lockfile; installed before the tests, which run in a namespace without a network
WRTC := tests/interop/wrtc
$(WRTC)/node_modules/.package-lock.json: $(WRTC)/package.json $(WRTC)/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix $(WRTC)

test: $(VENV)/.installed lint $(WRTC)/node_modules/.package-lock.json
	$(PY) scripts/in_netns.py $(PY) -m pytest -q

# needs node and npm; installs TypeScript 5 under .tsc/ (not part of `make test`)
typecheck-web:
	test -x .tsc/node_modules/.bin/tsc || npm install --silent --no-audit --no-fund --prefix .tsc typescript@5
	.tsc/node_modules/.bin/tsc --allowJs --checkJs --strict --noEmit --target es2022 \
		--module es2022 --lib es2022,dom,dom.iterable web/app.js web/parley-client.js

bench: $(VENV)/.installed
	$(PY) bench/forwarding.py --json bench/results/forwarding.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .tsc sfu/_native.*.so $(WRTC)/node_modules
