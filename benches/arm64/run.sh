#!/usr/bin/env bash
# aarch64 benchmarks in a QEMU TCG VM (planned, see benches/README.md): not implemented yet.
echo "make bench-arm64: not implemented yet (planned: cached QEMU TCG aarch64 VM from Debian" \
     "packages running benches/run.py; results labelled 'aarch64 (QEMU TCG, emulated)')" >&2
exit 2
