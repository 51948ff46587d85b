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

.PHONY: run test bench compare lint lab clean sysdeps-run sysdeps-test

run: sysdeps-run $(BIN)/.installed
	$(BIN)/twistd -n --pidfile= sipproxy --domain $(DOMAIN) --interface $(INTERFACE) --port $(PORT)

test: sysdeps-test $(BIN)/.installed
	$(BIN)/ruff check .
	SIPCALLING_REQUIRE_REDIS=1 SIPCALLING_REQUIRE_SIPP=1 SIPCALLING_REQUIRE_AUDIO=1 \
		SIPCALLING_REQUIRE_BROWSER=1 SIPCALLING_REQUIRE_FUZZ=1 SIPCALLING_REQUIRE_BARESIP=1 $(BIN)/pytest -q

bench: sysdeps-test $(BIN)/.installed
	-$(BIN)/pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/python bench/run_all.py

# Our proxy (1 and 2 workers) and Kamailio through the same sipp ramps, one table (~15 min).
compare: sysdeps-test $(BIN)/.installed
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
	$(BIN)/pip install -q -e '.[test,audio]' --config-settings editable_mode=compat
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
