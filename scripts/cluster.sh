#!/usr/bin/env bash
# A snapstart fleet on loopback: scripts/cluster.sh up|down|demo [--dir DIR] [--workers N]
# (an S3 endpoint, N `snapstart serve` workers, HAProxy in front; scripts/cluster.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/cluster.py "$@"
