#!/usr/bin/env bash
# `make bench-arm64`: the benchmark suite (benches/run.py) on aarch64 under QEMU TCG
# system emulation, then the x86_64-vs-aarch64 ratio comparison.
#
#   1. build.sh: the cached VM (Debian 12 arm64 rootfs with criu 3.17 and an offline
#      venv, Debian's arm64 kernel, a small initramfs) in benches/.cache/arm64;
#   2. a fresh run directory (shared with the VM over 9p): the repo as a tarball
#      (git ls-files: tracked + untracked, not ignored), guest.sh, bench.env, the RIE;
#   3. qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2, no network
#      device, console streamed to stderr and to CACHE/console.log; a watchdog kills
#      qemu (by its pid) after BENCH_ARM64_TIMEOUT seconds;
#   4. on the host: report.py renders the guest's JSON (Markdown + plots) into
#      benches/results/ and writes compare-latest.{md,png} against the newest x86_64
#      result; the comparison table is printed.
#
# Environment (defaults: a cached run took 18 min of TCG on this 2-core host):
#   BENCH_ARM64_N (5)  BENCH_ARM64_FUNCTIONS (hello,data,web)  BENCH_ARM64_BURST (1,4)
#   BENCH_ARM64_BURST_FUNCTIONS (hello)  BENCH_ARM64_MODEL_SIZES (100: MB of the
#   model function; '' for none)  BENCH_ARM64_MEM (4096 MiB)
#   BENCH_ARM64_TIMEOUT (3600 s)  PYTHON (host interpreter with matplotlib)
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$HERE/../..")
CACHE=${BENCH_ARM64_CACHE:-$ROOT/benches/.cache/arm64}
RESULTS=${BENCH_ARM64_RESULTS:-$ROOT/benches/results}
PYTHON=${PYTHON:-python3}
N=${BENCH_ARM64_N:-5}
FUNCTIONS=${BENCH_ARM64_FUNCTIONS:-hello,data,web}
BURST=${BENCH_ARM64_BURST-1,4}
BURST_FUNCTIONS=${BENCH_ARM64_BURST_FUNCTIONS:-hello}
MODEL_SIZES=${BENCH_ARM64_MODEL_SIZES-100}
MEM=${BENCH_ARM64_MEM:-4096}
TIMEOUT=${BENCH_ARM64_TIMEOUT:-3600}

say() { echo "[bench-arm64 $(date +%H:%M:%S)] $*" >&2; }
t_start=$(date +%s)

PYTHON=$PYTHON bash "$HERE/build.sh" "$CACHE"
t_built=$(date +%s)
say "VM build/cache check took $((t_built - t_start)) s"

RUN=$CACHE/run
rm -rf "$RUN"
mkdir -p "$RUN/out"
cp "$HERE/guest.sh" "$RUN/guest.sh"
cp "$CACHE/aws-lambda-rie-arm64" "$RUN/"
(cd "$ROOT" && git ls-files -z -co --exclude-standard \
    | grep -zv '^benches/results/' | tar --null -T - -cf "$RUN/repo.tar")
host_cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
qemu_ver=$(qemu-system-aarch64 --version | awk 'NR==1{print $4}')
cat > "$RUN/bench.env" <<ENV
BENCH_CPU_MODEL="QEMU $qemu_ver TCG -cpu max,pauth-impdef=on on $host_cpu"
BENCH_N=$N
BENCH_FUNCTIONS=$FUNCTIONS
BENCH_BURST=$BURST
BENCH_BURST_FUNCTIONS=$BURST_FUNCTIONS
BENCH_MODEL_SIZES=$MODEL_SIZES
ENV
chmod -R a+rX "$RUN"

LOG=$CACHE/console.log
QPID=
TPID=
stop_vm() {
    [ -n "$TPID" ] && kill "$TPID" 2>/dev/null || true
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        sleep 3
        kill -9 "$QPID" 2>/dev/null || true
    fi
}
trap stop_vm EXIT INT TERM
say "booting the aarch64 VM (QEMU TCG, -cpu max,pauth-impdef=on, -smp 2, ${MEM} MiB," \
    "N=$N, functions $FUNCTIONS, burst $BURST for $BURST_FUNCTIONS; timeout ${TIMEOUT} s)"
say "console: $LOG"
qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m "$MEM" \
    -display none -monitor none -serial stdio -no-reboot -nic none \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initramfs.cpio.gz" \
    -append "console=ttyAMA0 panic=1 loglevel=4" \
    -drive "file=$CACHE/rootfs.img,format=raw,if=virtio,cache=unsafe" \
    -virtfs "local,path=$RUN,mount_tag=run,security_model=none,id=run" \
    < /dev/null > "$LOG" 2>&1 &
QPID=$!
tail -n +1 -f --pid="$QPID" "$LOG" >&2 &
TPID=$!
deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$QPID" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "FAILED: the VM did not finish within ${TIMEOUT} s; killing qemu (pid $QPID)"
        stop_vm
        exit 1
    fi
    sleep 2
done
wait "$QPID" || true
QPID=
sleep 0.5
kill "$TPID" 2>/dev/null || true
TPID=
t_vm=$(date +%s)
say "VM ran $((t_vm - t_built)) s (boot + suite + power-off)"

status=$(cat "$RUN/out/status" 2>/dev/null || echo "none")
if [ "$status" != 0 ]; then
    say "FAILED: guest status '$status' (no status = the guest never reached the suite's end); see $LOG"
    exit 1
fi
json=$(ls "$RUN"/out/*.json 2>/dev/null | head -1)
[ -n "$json" ] || { say "FAILED: the guest wrote no result JSON"; exit 1; }
"$PYTHON" "$ROOT/benches/report.py" render "$json" --out "$RESULTS"
"$PYTHON" "$ROOT/benches/report.py" compare --results "$RESULTS"
say "total $(( $(date +%s) - t_start )) s (build/cache $((t_built - t_start)) s, VM $((t_vm - t_built)) s)"
