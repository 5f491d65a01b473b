# The two commands of the README: `make demo` runs the platform, `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install bench clean

$(BIN)/marketdata: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/marketdata

demo: install
	$(BIN)/marketdata up

# Three workers: most of an end-to-end test's wall time is a simulated hour passing, not CPU.
test: install
	$(BIN)/python -m pytest marketdata_tests -q -n 3

bench: install
	$(BIN)/marketdata bench --venues binance --rate 50000 --duration 60

clean:
	rm -rf .marketdata
