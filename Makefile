# snapstart — one-command setup. Every install step lives here (CI runs on a fresh
# Debian 12 machine as root). Each step leaves a stamp, so re-running is cheap.
SHELL := /bin/bash
# Let the interpreters make write their bytecode caches (see the venv step).
unexport PYTHONDONTWRITEBYTECODE
ROOT := $(abspath .)
STATE := $(ROOT)/.snapstart
STAMPS := $(STATE)/stamps
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
CRIU_PREFIX := $(STATE)/criu
# Debian's interpreter, not whatever `python3` is on PATH: functions run as an
# unprivileged user that must be able to exec it (a pyenv under /root cannot be).
PYTHON ?= /usr/bin/python3
APT_PACKAGES := build-essential pkg-config libprotobuf-c-dev protobuf-c-compiler \
	libprotobuf-dev protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev \
	libgnutls28-dev libnftables-dev libaio-dev uuid-dev iproute2 util-linux \
	python3-venv xz-utils haproxy rabbitmq-server tzdata nftables

.PHONY: all setup deps criu snapinit native venv demo cluster-demo test typecheck unit integration bench doctor clean distclean

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
$(CRIU_PREFIX)/.built: scripts/build-criu.sh $(wildcard scripts/criu-patches/*.patch) | $(STAMPS)/apt
	scripts/build-criu.sh $(CRIU_PREFIX) $(STATE)/build

criu: $(CRIU_PREFIX)/.built

# snapinit: PID 1 of every sandbox (bootstrap/init/snapinit.c), static.
$(STATE)/snapinit: bootstrap/init/snapinit.c | $(STAMPS)/apt
	@mkdir -p $(STATE)
	gcc -O2 -Wall -Werror -static -o $@.tmp $<
	mv $@.tmp $@

snapinit: $(STATE)/snapinit

# The agent (bootstrap/native): a library the Python runtime loads (one process per
# snapshot) and an executable for the other runtimes; both under /var/runtime/snapstart
# in every sandbox.
NATIVE_SRC := $(wildcard bootstrap/native/*.c bootstrap/native/*.h)
$(STATE)/runtime/libsnapagent.so: $(NATIVE_SRC) | $(STAMPS)/apt
	@mkdir -p $(STATE)/runtime
	gcc -O2 -Wall -Wextra -Werror -fPIC -shared -o $@.tmp bootstrap/native/snapagent.c \
	  bootstrap/native/msgpack.c bootstrap/native/confine.c -lpthread
	mv $@.tmp $@

$(STATE)/runtime/snapagent: $(NATIVE_SRC) | $(STAMPS)/apt
	@mkdir -p $(STATE)/runtime
	gcc -O2 -Wall -Wextra -Werror -DSNAPAGENT_MAIN -o $@.tmp bootstrap/native/snapagent.c \
	  bootstrap/native/msgpack.c bootstrap/native/confine.c -lpthread
	mv $@.tmp $@

native: $(STATE)/snapinit $(STATE)/runtime/libsnapagent.so $(STATE)/runtime/snapagent

$(STAMPS)/venv: pyproject.toml $(CRIU_PREFIX)/.built $(STATE)/snapinit \
	  $(STATE)/runtime/libsnapagent.so $(STATE)/runtime/snapagent
	@mkdir -p $(STAMPS)
	@# recreate a venv built on another interpreter (e.g. one under /root)
	@if [ -f $(VENV)/pyvenv.cfg ] && ! grep -qx "home = $$(dirname $$(realpath $(PYTHON)))" $(VENV)/pyvenv.cfg; then \
	  echo "venv: rebuilding on $(PYTHON)"; rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# compat mode: a plain .pth path entry; the default editable finder costs ~25 ms at
	# every interpreter start (agent and runtime included).
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	# pycriu from the same CRIU tree, importable from the venv.
	echo "$(CRIU_PREFIX)/lib/python" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/snapstart-pycriu.pth
	$(PY) -c 'import pycriu, awslambdaric, pyroute2, msgpack, zstandard, click; print("venv ok, pycriu", pycriu.__version__)'
	@# Bytecode ahead of time: this machine's environment sets PYTHONDONTWRITEBYTECODE,
	@# and compiling pycriu's protobuf modules and the package costs ~120 ms per CLI call.
	$(PY) -m compileall -q -j0 snapstart bootstrap $(CRIU_PREFIX)/lib/python \
	  $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null
	@touch $@

venv: $(STAMPS)/venv

doctor: venv
	$(VENV)/bin/snapstart doctor

demo: venv node-ric
	bash scripts/demo.sh

# A fleet on loopback: S3 (moto), three `snapstart serve` workers, HAProxy (issue 16;
# scripts/cluster.py). The last line of output is one JSON object.
cluster-demo: venv
	scripts/cluster.sh demo --workers 3

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q tests/integration

test: venv node-ric typecheck
	$(VENV)/bin/snapstart doctor
	$(PY) -m pytest -q -ra tests

# mypy over snapstart/ and bootstrap/ (config: [tool.mypy] in pyproject.toml)
typecheck: venv
	$(PY) -m mypy

clean:
	rm -rf $(STAMPS) build *.egg-info

distclean: clean
	rm -rf $(VENV) $(STATE)

# Node.js runtime client: npm aws-lambda-ric 3.x (3.x is the last line for Node 20;
# 4.x needs Node >= 22). Its native addon builds from source (cmake autoconf
# automake libtool g++) against the local Node's headers, into a project-local
# prefix. Node itself comes from the machine; Debian's nodejs/npm only if absent.
NODE_RIC_VERSION := 3.3.0
NODE_PREFIX := $(STATE)/node
NODE_APT_PACKAGES := cmake autoconf automake libtool g++ make python3

$(NODE_PREFIX)/.built-$(NODE_RIC_VERSION):
	@mkdir -p $(NODE_PREFIX)
	@need=$$(for p in $(NODE_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	command -v node >/dev/null && command -v npm >/dev/null || need="$$need nodejs npm"; \
	if [ -n "$$need" ]; then \
	  echo apt: installing $$need; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need >/dev/null; \
	fi
	# nodedir: build against the installed headers instead of downloading them.
	nodedir=$$(node -p 'require("path").resolve(process.execPath, "../..")'); \
	test -f $$nodedir/include/node/node.h || nodedir=; \
	npm_config_nodedir=$$nodedir npm install --prefix $(NODE_PREFIX) --no-audit --no-fund \
	  --save-exact --loglevel=error aws-lambda-ric@$(NODE_RIC_VERSION)
	test -x $(NODE_PREFIX)/node_modules/.bin/aws-lambda-ric
	cd $(NODE_PREFIX) && node --input-type=module -e 'await import("aws-lambda-ric"); console.log("aws-lambda-ric ok")'
	@rm -f $(NODE_PREFIX)/.built-*
	@touch $@

# The OpenSSL RAND engine and config that make Node's randomness snapshot-safe
# (bootstrap/node/snapstart-preload.js explains), built against the same headers.
$(NODE_PREFIX)/snapstart-rand-engine.so: bootstrap/node/snapstart-rand-engine.c $(NODE_PREFIX)/.built-$(NODE_RIC_VERSION)
	nodedir=$$(node -p 'require("path").resolve(process.execPath, "../..")'); \
	inc=$$nodedir/include/node; test -f $$inc/openssl/engine.h || inc=$$(ls -d $$HOME/.cache/node-gyp/$$(node -p 'process.versions.node')/include/node); \
	gcc -shared -fPIC -O2 -Wall -Werror -Wno-deprecated-declarations -I$$inc -o $@.tmp $<
	mv $@.tmp $@

# Checked here with the engine's host path; installed with the path sandboxes see
# (/var/runtime/node: snapstart/sandbox/mountns.py).
$(NODE_PREFIX)/openssl.cnf: bootstrap/node/openssl.cnf.in $(NODE_PREFIX)/snapstart-rand-engine.so
	sed 's|@ENGINE@|$(NODE_PREFIX)/snapstart-rand-engine.so|' $< > $@.tmp
	node --openssl-config=$@.tmp -e 'require("crypto").randomBytes(16)'
	sed 's|@ENGINE@|/var/runtime/node/snapstart-rand-engine.so|' $< > $@.tmp
	mv $@.tmp $@

node-ric: $(NODE_PREFIX)/.built-$(NODE_RIC_VERSION) $(NODE_PREFIX)/openssl.cnf

.PHONY: node-ric

# ---- benchmarks (benches/, issue 5) ----------------------------------------------
# Benchmark-only Python deps go into the project venv from benches/requirements.txt
# (not pyproject); the RIE binary and the sam CLI (own venv) into benches/.cache.
# BENCH_N sets repetitions (default 20; BENCH_N=3 is a quick smoke run).
$(STAMPS)/bench-deps: $(STAMPS)/venv benches/requirements.txt benches/requirements-sam.txt benches/fetch-tools.sh
	$(PY) -m pip install -q --disable-pip-version-check -r benches/requirements.txt
	PYTHON=$(PY) bash benches/fetch-tools.sh $(ROOT)/benches/.cache
	@touch $@

bench: $(STAMPS)/bench-deps
	$(PY) benches/run.py

# aarch64 under QEMU TCG (benches/arm64/run.sh; cached in benches/.cache/arm64).
# Host side: qemu-system-arm, qemu-user-static + binfmt-support (debootstrap and the
# offline pip install run in an arm64 chroot), debootstrap, cpio. The report (plots,
# the x86_64-vs-aarch64 comparison) uses the project venv with matplotlib.
ARM64_APT_PACKAGES := qemu-system-arm qemu-user-static binfmt-support debootstrap cpio \
	e2fsprogs gzip
$(STAMPS)/arm64-apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(ARM64_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

bench-arm64: $(STAMPS)/bench-deps $(STAMPS)/arm64-apt
	PYTHON=$(PY) bash benches/arm64/run.sh

.PHONY: bench bench-arm64
