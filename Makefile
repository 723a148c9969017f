# snapstart — one-command setup. Every install step lives here (CI runs on a fresh
# Debian 12 machine as root). Each step leaves a stamp, so re-running is cheap.
SHELL := /bin/bash
ROOT := $(abspath .)
STATE := $(ROOT)/.snapstart
STAMPS := $(STATE)/stamps
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
CRIU_PREFIX := $(STATE)/criu
PYTHON ?= python3
APT_PACKAGES := build-essential pkg-config libprotobuf-c-dev protobuf-c-compiler \
	libprotobuf-dev protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev \
	libgnutls28-dev libnftables-dev libaio-dev uuid-dev iproute2 util-linux \
	python3-venv xz-utils

.PHONY: all setup deps criu venv demo test unit integration bench doctor clean distclean

all: setup

setup: venv

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi
	@touch $@

deps: $(STAMPS)/apt

# CRIU >= 4.2 from Debian's source package (see ../shared/PLATFORM.md), project-local.
$(CRIU_PREFIX)/.built: scripts/build-criu.sh | $(STAMPS)/apt
	scripts/build-criu.sh $(CRIU_PREFIX) $(STATE)/build

criu: $(CRIU_PREFIX)/.built

$(STAMPS)/venv: pyproject.toml $(CRIU_PREFIX)/.built
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# compat mode: a plain .pth path entry; the default editable finder costs ~25 ms at
	# every interpreter start (agent and runtime included).
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	# pycriu from the same CRIU tree, importable from the venv.
	echo "$(CRIU_PREFIX)/lib/python" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/snapstart-pycriu.pth
	$(PY) -c 'import pycriu, awslambdaric, pyroute2, msgpack, zstandard, click, h11; print("venv ok, pycriu", pycriu.__version__)'
	@touch $@

venv: $(STAMPS)/venv

doctor: venv
	$(VENV)/bin/snapstart doctor

demo: venv
	bash scripts/demo.sh

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q tests/integration

test: venv
	$(VENV)/bin/snapstart doctor
	$(PY) -m pytest -q -ra tests

clean:
	rm -rf $(STAMPS) build *.egg-info

distclean: clean
	rm -rf $(VENV) $(STATE)
