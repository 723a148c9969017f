#!/usr/bin/env bash
# Benchmark tools that are not Python libraries, cached in benches/.cache (idempotent):
#  - the AWS Lambda Runtime Interface Emulator, the binary shipped inside the
#    aws-sam-cli wheel (`pip download aws-sam-cli --no-deps`, one file unzipped);
#  - the sam CLI itself in its own venv (it pins boto3/click/... differently from
#    snapstart, so it must not go into the project venv), for
#    `sam local generate-event`. Optional: run.py falls back to the checked-in event.
set -euo pipefail
CACHE=${1:-$(dirname "$0")/.cache}
PYTHON=${PYTHON:-python3}
mkdir -p "$CACHE/wheels"
case "$(uname -m)" in
  x86_64) RIE=aws-lambda-rie-x86_64 ;;
  aarch64) RIE=aws-lambda-rie-arm64 ;;
  *) echo "fetch-tools: no RIE build for $(uname -m)" >&2; RIE= ;;
esac
if [ -n "$RIE" ] && [ ! -x "$CACHE/$RIE" ]; then
  echo "fetch-tools: downloading the aws-sam-cli wheel for $RIE" >&2
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$CACHE/wheels" aws-sam-cli
  "$PYTHON" - "$CACHE" "$RIE" <<'PY'
import glob, os, sys, zipfile
cache, name = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(os.path.join(cache, "wheels", "aws_sam_cli-*.whl")))[-1]
with zipfile.ZipFile(wheel) as zf:
    data = zf.read(f"samcli/local/rapid/{name}")
out = os.path.join(cache, name)
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
print(f"fetch-tools: {out} from {os.path.basename(wheel)}", file=sys.stderr)
PY
fi
if [ ! -x "$CACHE/sam-venv/bin/sam" ]; then
  echo "fetch-tools: installing aws-sam-cli into $CACHE/sam-venv" >&2
  "$PYTHON" -m venv "$CACHE/sam-venv"
  "$CACHE/sam-venv/bin/pip" install -q --disable-pip-version-check -r "$(dirname "$0")/requirements-sam.txt" \
    || echo "fetch-tools: sam CLI unavailable; using the checked-in API Gateway event" >&2
fi
