#!/usr/bin/env bash
# Build CRIU >= 4.2 from Debian's source package into a project-local prefix.
#
# Why: Debian 12's packaged criu (3.17) fails on Linux >= 6.16 ("vdso: Unexpected
# rt vDSO area bounds") and 4.1 cannot dump TCP sockets there; 4.2.1 works.
# The source is fetched by apt itself with a *private* state directory so the
# system's apt configuration is never touched (no foreign binary suites).
#
# Usage: scripts/build-criu.sh PREFIX WORKDIR
# Result: PREFIX/sbin/criu and PREFIX/lib/python/pycriu (protobuf modules generated).
# Patches in scripts/criu-patches/*.patch are applied (each says why).
# Idempotent: does nothing when PREFIX/.built records this recipe (this script and
# the patches) and criu runs; any change to them rebuilds.
set -euo pipefail
PREFIX=$(realpath -m "$1")
WORK=$(realpath -m "$2")
RUNDIR=${SNAPSTART_CRIU_RUNDIR:-/dev/shm/snapstart-criu-run}

HERE=$(dirname "$(realpath "$0")")
RECIPE=$(cat "$0" "$HERE"/criu-patches/*.patch 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$PREFIX/.built" 2>/dev/null)" = "$RECIPE" ] && "$PREFIX/sbin/criu" --version >/dev/null 2>&1; then
    echo "criu: cached at $PREFIX/sbin/criu"; exit 0
fi
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
cat > "$WORK/apt/sources.list" <<LIST
deb-src http://deb.debian.org/debian forky main
deb-src http://deb.debian.org/debian sid main
LIST
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
          -o Dir::State::Status=/var/lib/dpkg/status -o Debug::NoLocking=1)
cd "$WORK/src"
if ! ls criu_*.orig.tar.* >/dev/null 2>&1; then
    apt-get "${APT_OPTS[@]}" -q update
    # The .debian.tar.xz may 404 (apt then exits non-zero); the orig tarball is all we need.
    apt-get "${APT_OPTS[@]}" -q source --download-only criu || true
fi
TARBALL=$(ls criu_*.orig.tar.* | sort -V | tail -n1)
[ -n "$TARBALL" ] || { echo "criu: source tarball not downloaded" >&2; exit 1; }
VER=$(echo "$TARBALL" | sed -E 's/criu_([0-9.]+)\.orig.*/\1/')
case "$VER" in 4.[2-9]*|4.[1-9][0-9]*|[5-9].*) ;; *) echo "criu: need >= 4.2, got $VER" >&2; exit 1;; esac
rm -rf "criu-$VER"
tar xf "$TARBALL"
cd "criu-$VER"
for p in "$HERE"/criu-patches/*.patch; do
    [ -e "$p" ] || continue
    patch -p1 -s < "$p"
done
mkdir -p "$RUNDIR"
make -j"$(nproc)" criu RUNDIR="$RUNDIR" PREFIX="$PREFIX" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
mkdir -p "$PREFIX/sbin" "$PREFIX/lib/python"
install -m 0755 criu/criu "$PREFIX/sbin/criu"
# pycriu: CRIU's own `make lib` generates rpc_pb2.py, version.py and the image
# protobuf modules (protoc --python_out) inside lib/pycriu; install that package.
make lib PYTHON=python3 >>"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
rm -rf "$PREFIX/lib/python/pycriu"
cp -r lib/pycriu "$PREFIX/lib/python/pycriu"
find "$PREFIX/lib/python/pycriu" -name Makefile -delete
echo "$RECIPE" > "$PREFIX/.built"
"$PREFIX/sbin/criu" --version
