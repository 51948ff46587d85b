# The README's commands. Each target bootstraps what it needs on a fresh Debian machine:
# system packages via apt when run as root (otherwise one line naming them), then .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DEB := libopus0 portaudio19-dev gcc python3-dev
TEST_DEB := $(RUN_DEB) sip-tester redis-server chromium baresip-core espeak-ng
DOMAIN ?= a.lab
INTERFACE ?= 127.0.0.1
PORT ?= 5060
# Run a second time on the sources by `make test` (the compiled modules' own tests).
INTERPRETED_TESTS ?= tests/sipcore tests/registrar tests/proxy

.PHONY: run test bench compare lint lab clean compiled sysdeps-run sysdeps-test

run: sysdeps-run $(BIN)/.installed
	@# The hot path compiled with mypyc (sipcore/accel.py); without a C compiler the
	@# sources run, which is slower but the same code.
	-@$(BIN)/python deploy/compile.py --if-stale
	$(BIN)/twistd -n --pidfile= sipproxy --domain $(DOMAIN) --interface $(INTERFACE) --port $(PORT)

# The whole suite on the compiled build (what `make run` runs), then the unit tests of
# the compiled modules' packages on their sources (the reference; SIPCALLING_INTERPRETED).
test: sysdeps-test $(BIN)/.installed compiled
	$(BIN)/ruff check .
	SIPCALLING_REQUIRE_COMPILED=1 SIPCALLING_REQUIRE_REDIS=1 SIPCALLING_REQUIRE_SIPP=1 \
		SIPCALLING_REQUIRE_AUDIO=1 SIPCALLING_REQUIRE_BROWSER=1 SIPCALLING_REQUIRE_FUZZ=1 \
		SIPCALLING_REQUIRE_BARESIP=1 $(BIN)/pytest -q
	SIPCALLING_INTERPRETED=1 $(BIN)/pytest -q $(INTERPRETED_TESTS)

compiled: $(BIN)/.installed
	$(BIN)/python deploy/compile.py --if-stale

bench: sysdeps-test $(BIN)/.installed compiled
	-$(BIN)/pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/python bench/run_all.py

# Our proxy (1 and 2 workers), Twisted's registrar and Kamailio through the same sipp ramps,
# each best rate then held 40 s, one table (~40 min).
compare: sysdeps-test $(BIN)/.installed compiled
	@$(PYTHON) deploy/sysdeps.py --required kamailio
	$(BIN)/python bench/compare.py

lab: sysdeps-test $(BIN)/.installed
	$(BIN)/sipcalling-lab

lint: $(BIN)/.installed
	$(BIN)/ruff check .

sysdeps-run:
	@$(PYTHON) deploy/sysdeps.py $(RUN_DEB)

sysdeps-test:
	@$(PYTHON) deploy/sysdeps.py --required $(TEST_DEB)

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,audio,accel]' --config-settings editable_mode=compat
	touch $@

clean:
	-test -x $(BIN)/python && $(BIN)/python deploy/compile.py --clean
	rm -rf $(VENV) build *.egg-info
