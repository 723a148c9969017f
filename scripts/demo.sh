#!/usr/bin/env bash
# `make demo`: publish the sample function, then invoke it cold, restored and warm.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAP=.venv/bin/snapstart
export SNAPSTART_HOME=${SNAPSTART_HOME:-$PWD/.snapstart/demo-home}
export SNAPSTART_SHM=${SNAPSTART_SHM:-/dev/shm/snapstart-demo}
trap 'rm -rf "$SNAPSTART_SHM"' EXIT

echo "== snapstart doctor"
$SNAP doctor
echo
echo "== publish examples/hello as demo-hello (init once, before-snapshot hooks, CRIU checkpoint)"
$SNAP publish examples/hello --name demo-hello --handler app.handler --memory 256 --timeout 10
echo
echo "== cold start (no snapshot: new sandbox, full init)"
$SNAP invoke demo-hello --no-snapshot --payload '{"name": "cold"}'
echo
echo "== restored start, then two warm invokes on the same clone"
$SNAP invoke demo-hello --repeat 3 --payload '{"name": "snap"}'
echo
echo "== 4 clones restored at once from one snapshot (each has its own netns and clone id)"
$SNAP invoke demo-hello --clones 4 --json --payload '{"name": "burst"}' 2>/dev/null \
  | .venv/bin/python -c '
import json, sys
for r in json.load(sys.stdin):
    print("  %-8s clone=%s restore=%.1f ms" % (r["start_type"], r["payload"]["clone"],
                                            r.get("restore_duration_ms", 0)))'
echo
echo "== versions and snapshots under $SNAPSTART_HOME"
$SNAP functions
