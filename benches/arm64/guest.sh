#!/bin/bash
# PID 1 of the aarch64 benchmark VM after switch_root (the initramfs execs it from
# the 9p share /mnt/run, where run.sh copied it with the repo tarball and bench.env).
#
# Provides what snapstart needs (cgroup2 with memory/pids/cpu, tmpfs /dev/shm, /tmp
# and /run -- CRIU keeps its kdat cache in /run --, /dev/pts, loopback up), unpacks
# the repo into a tmpfs at /opt/snapstart (the guest venv's .pth points there), runs
# the same benches/run.py as on x86_64 with --out /mnt/run/out (no plots: the host
# draws them), writes /mnt/run/out/status and powers off. It never returns: a bash
# error still ends in poweroff (trap), and the host has its own timeout.
set -u
export PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 HOME=/root
OUT=/mnt/run/out

finish() {
    echo "${1:-1}" > "$OUT/status.tmp" && mv "$OUT/status.tmp" "$OUT/status"
    sync
    umount /mnt/run 2>/dev/null
    mount -o remount,ro / 2>/dev/null
    echo "guest: powering off" >&2
    busybox poweroff -f
    sleep 30
}
trap 'finish 1' EXIT
mkdir -p "$OUT"
echo "guest: $(uname -srm), $(nproc) cpus, $(awk '/MemTotal/{print $2 / 1024 " MiB"}' /proc/meminfo)" >&2

mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
# CRIU dumps sockets through the sock_diag modules (modules in Debian's arm64 kernel)
for m in unix_diag inet_diag tcp_diag udp_diag netlink_diag packet_diag af_packet_diag; do
    modprobe -q "$m" 2>/dev/null || true
done
hostname snapstart-arm64 2>/dev/null || true

# the repo (tracked + untracked, not ignored files, packed by run.sh)
mount -t tmpfs -o mode=755 tmpfs /opt/snapstart
tar -C /opt/snapstart -xf /mnt/run/repo.tar
mkdir -p /opt/snapstart/benches/.cache
cp /mnt/run/aws-lambda-rie-arm64 /opt/snapstart/benches/.cache/
chmod -R a+rX /opt/snapstart

set -a
. /mnt/run/bench.env
set +a
# publish pip-installs the functions' requirements.txt: offline, from the wheel cache
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
export BENCH_EMULATED=1 BENCH_ARCH_LABEL="aarch64 (QEMU TCG, emulated)"

cd /opt/snapstart
# snapinit and the agent for aarch64 (`make native`; its apt stamp is the rootfs's
# build-time packages: the guest has no network)
mkdir -p .snapstart/stamps && touch .snapstart/stamps/apt
make -s native >&2 || { echo "guest: make native failed" >&2; exit 1; }
echo "guest: criu $(criu --version | head -1); criu check: $(criu check 2>&1 | tail -1)" >&2
snapstart doctor >&2 || echo "guest: snapstart doctor reported problems" >&2
python benches/run.py --n "$BENCH_N" --functions "$BENCH_FUNCTIONS" --burst "$BENCH_BURST" \
    --burst-functions "$BENCH_BURST_FUNCTIONS" --out "$OUT" --no-plots > "$OUT/run.stdout"
rc=$?
echo "guest: benches/run.py exited $rc" >&2
trap - EXIT
finish "$rc"
