#!/usr/bin/env bash
# Build (once) everything the aarch64 benchmark VM needs, cached in CACHE
# (default benches/.cache/arm64, gitignored). Debian packages only, plus aarch64
# wheels from PyPI downloaded on the host (the VM has no network).
#
#   rootfs/           debootstrap --arch=arm64 bookworm (qemu-user-static via binfmt):
#                     python3, python3-venv, criu 3.17 (ships pycriu), busybox-static,
#                     gcc + libc6-dev + make (the guest builds snapinit and the agent);
#                     /opt/venv with snapstart's and the bench functions' deps
#                     installed offline from /opt/wheels (in a chroot)
#   kernel/           Debian's linux-image-*-arm64 unpacked (vmlinuz + modules)
#   wheels/           `pip download --platform manylinux*_aarch64 --only-binary=:all:`
#   rootfs.img        ext4 image of rootfs/ (mkfs.ext4 -d: no loop device, no mount)
#   initramfs.cpio.gz busybox + the virtio/ext4/9p modules + init (initramfs-init.sh)
#   aws-lambda-rie-arm64  the RIE binary from the aws-sam-cli wheel
#
# Each step leaves a stamp (CACHE/stamps/<step>) and is skipped when present, so a
# second run only re-checks stamps (and rebuilds the small initramfs if init changed).
# Must be run as root (debootstrap, chroot). Host prerequisites are installed by
# `make bench-arm64`: qemu-system-arm qemu-user-static debootstrap binfmt-support cpio.
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$HERE/../..")
CACHE=$(realpath -m "${1:-$ROOT/benches/.cache/arm64}")
PYTHON=${PYTHON:-python3}
MIRROR=${BENCH_ARM64_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
ROOTFS=$CACHE/rootfs
STAMPS=$CACHE/stamps
mkdir -p "$STAMPS"

say() { echo "[arm64-build $(date +%H:%M:%S)] $*" >&2; }
done_() { [ -f "$STAMPS/$1" ]; }
stamp() { date -u +%FT%TZ > "$STAMPS/$1"; }

# ---- binfmt: run arm64 binaries in the chroot through qemu-aarch64-static ---------
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64
fi

# ---- chroot helper: /proc and /dev bound for the duration of one command ---------
MOUNTED=()
cleanup() {
    local i
    for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
    MOUNTED=()
}
trap cleanup EXIT
in_chroot() {
    mount -t proc proc "$ROOTFS/proc"; MOUNTED+=("$ROOTFS/proc")
    mount --bind /dev "$ROOTFS/dev"; MOUNTED+=("$ROOTFS/dev")
    local rc=0
    env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 HOME=/root \
        chroot "$ROOTFS" "$@" || rc=$?
    cleanup
    return $rc
}

# ---- 1. rootfs --------------------------------------------------------------------
if ! done_ debootstrap; then
    say "debootstrap $SUITE arm64 from $MIRROR (first run only, ~5 min here)"
    rm -rf "$ROOTFS" "$CACHE/rootfs.tmp"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,criu,busybox-static,kmod,iproute2,procps,gcc,libc6-dev,make \
        "$SUITE" "$CACHE/rootfs.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    mv "$CACHE/rootfs.tmp" "$ROOTFS"
    rm -f "$STAMPS"/{kernel,venv,image}
    stamp debootstrap
fi

# ---- 2. kernel: Debian's arm64 image, unpacked (not installed: no initramfs-tools) --
if ! done_ kernel; then
    say "downloading Debian's linux-image-arm64"
    in_chroot apt-get -q update >/dev/null
    pkg=$(in_chroot apt-cache depends linux-image-arm64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [ -n "$pkg" ] || { echo "arm64-build: cannot resolve linux-image-arm64" >&2; exit 1; }
    rm -rf "$CACHE/kernel" "$ROOTFS"/tmp/*.deb
    (cd "$ROOTFS/tmp" && in_chroot sh -c "cd /tmp && apt-get -q download $pkg" >/dev/null)
    mkdir -p "$CACHE/kernel"
    dpkg-deb -x "$ROOTFS"/tmp/"$pkg"_*.deb "$CACHE/kernel"
    rm -f "$ROOTFS"/tmp/*.deb
    kver=$(ls "$CACHE/kernel/lib/modules")
    grep -q '^CONFIG_CHECKPOINT_RESTORE=y' "$CACHE/kernel/boot/config-$kver" \
        || { echo "arm64-build: $pkg lacks CONFIG_CHECKPOINT_RESTORE" >&2; exit 1; }
    # modules into the rootfs too (9p, overlay, ... are loaded by name in the guest)
    rm -rf "$ROOTFS/lib/modules"
    mkdir -p "$ROOTFS/lib/modules"
    cp -a "$CACHE/kernel/lib/modules/$kver" "$ROOTFS/lib/modules/"
    in_chroot depmod "$kver"
    rm -f "$STAMPS/image"
    stamp kernel
fi
KVER=$(ls "$CACHE/kernel/lib/modules")

# ---- 3. aarch64 wheels, downloaded on the host ------------------------------------
# snapstart's runtime deps (pyproject.toml) + the bench functions' deps
# (benches/requirements.txt minus matplotlib: plots are drawn on the host).
REQS=$CACHE/requirements-guest.txt
"$PYTHON" - "$ROOT/pyproject.toml" "$ROOT/benches/requirements.txt" > "$REQS.new" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
bench = [l.split("#")[0].strip() for l in open(sys.argv[2])]
print("\n".join(deps + [b for b in bench if b and not b.startswith("matplotlib")]))
PY
if ! done_ wheels || ! cmp -s "$REQS.new" "$REQS"; then
    say "downloading aarch64 wheels (pip download --platform manylinux*_aarch64)"
    mkdir -p "$CACHE/wheels"
    "$PYTHON" -m pip download -q --disable-pip-version-check -d "$CACHE/wheels" \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        --platform manylinux_2_34_aarch64 --platform manylinux_2_36_aarch64 \
        -r "$REQS.new" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    ls "$CACHE"/wheels/awslambdaric-*aarch64*.whl >/dev/null
    mv "$REQS.new" "$REQS"
    rm -f "$STAMPS"/{venv,image}
    stamp wheels
fi
rm -f "$REQS.new"

# ---- 4. the guest venv, installed offline in the chroot ---------------------------
if ! done_ venv; then
    say "installing the guest venv offline (chroot, qemu-user; first run only)"
    rm -rf "$ROOTFS/opt/venv" "$ROOTFS/opt/wheels"
    mkdir -p "$ROOTFS/opt/wheels"
    cp "$CACHE"/wheels/*.whl "$ROOTFS/opt/wheels/"
    cp "$REQS" "$ROOTFS/opt/wheels/requirements.txt"
    in_chroot python3 -m venv /opt/venv
    in_chroot /opt/venv/bin/pip install -q --disable-pip-version-check --no-index \
        --find-links /opt/wheels -r /opt/wheels/requirements.txt
    site=$ROOTFS/opt/venv/lib/python3.11/site-packages
    # pycriu comes with Debian's criu package (matches its 3.17 RPC)
    ln -sfn /usr/lib/python3/dist-packages/pycriu "$site/pycriu"
    # snapstart itself: the source is copied to /opt/snapstart at every boot (guest.sh)
    echo /opt/snapstart > "$site/snapstart-src.pth"
    printf '#!/opt/venv/bin/python\nimport sys\nfrom snapstart.cli import main\nsys.exit(main())\n' \
        > "$ROOTFS/opt/venv/bin/snapstart"
    chmod 755 "$ROOTFS/opt/venv/bin/snapstart"
    mkdir -p "$ROOTFS/opt/snapstart"
    in_chroot /opt/venv/bin/python -m compileall -q -j0 /opt/venv/lib/python3.11/site-packages >/dev/null || true
    in_chroot /opt/venv/bin/python -c 'import pycriu, awslambdaric, pyroute2, numpy, pandas, pydantic; print("guest venv ok")' >&2
    rm -f "$STAMPS/image"
    stamp venv
fi

# ---- 5. RIE (arm64) from the aws-sam-cli wheel ------------------------------------
if [ ! -x "$CACHE/aws-lambda-rie-arm64" ]; then
    say "fetching aws-lambda-rie-arm64 (aws-sam-cli wheel)"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$CACHE/sam-wheel" \
        aws-sam-cli 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PYTHON" - "$CACHE" <<'PY'
import glob, os, sys, zipfile
cache = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(cache, "sam-wheel", "aws_sam_cli-*.whl")))[-1]
out = os.path.join(cache, "aws-lambda-rie-arm64")
with zipfile.ZipFile(wheel) as zf, open(out + ".tmp", "wb") as f:
    f.write(zf.read("samcli/local/rapid/aws-lambda-rie-arm64"))
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
fi

# ---- 6. ext4 image of the rootfs (no loop device: mkfs.ext4 -d) --------------------
if ! done_ image; then
    say "writing rootfs.img (mkfs.ext4 -d)"
    rm -f "$CACHE/rootfs.img"
    mkdir -p "$ROOTFS/mnt/run" "$ROOTFS/opt/snapstart"   # mount points
    mkfs.ext4 -q -F -L snapstart-root -E root_owner=0:0 -d "$ROOTFS" "$CACHE/rootfs.img" 4G
    stamp image
fi

# ---- 7. initramfs: busybox + modules for virtio-blk, ext4 and 9p + init ------------
# Rebuilt when init or the kernel changes (cheap: a few MB of cpio).
INITRD=$CACHE/initramfs.cpio.gz
KEY=$(cat "$HERE/initramfs-init.sh" "$0" | sha256sum | cut -c1-16)-$KVER
if [ "$(cat "$CACHE/initramfs.key" 2>/dev/null)" != "$KEY" ] || [ ! -f "$INITRD" ]; then
    say "building initramfs"
    IR=$(mktemp -d "$CACHE/initramfs.XXXXXX")
    mkdir -p "$IR"/{bin,dev,proc,sys,newroot,lib/modules}
    cp "$ROOTFS/bin/busybox" "$IR/bin/busybox"
    cp "$HERE/initramfs-init.sh" "$IR/init"
    chmod 755 "$IR/init"
    MODDIR=$ROOTFS/lib/modules/$KVER      # depmod'ed (modules.dep)
    # the wanted modules and their dependencies, in load order (modules.dep lists deps)
    "$PYTHON" - "$MODDIR" virtio_blk virtio_pci crc32c_generic ext4 9p 9pnet_virtio > "$IR/modules.list" <<'PY'
import os, sys
moddir, wanted = sys.argv[1], sys.argv[2:]
deps, byname = {}, {}
for line in open(os.path.join(moddir, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
    byname[os.path.basename(mod).split(".ko")[0].replace("-", "_")] = mod
builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_")
           for l in open(os.path.join(moddir, "modules.builtin"))}
order, seen = [], set()
def visit(mod):
    if mod in seen:
        return
    seen.add(mod)
    for d in reversed(deps.get(mod, [])):
        visit(d)
    order.append(mod)
for name in wanted:
    if name in builtin:
        continue
    if name not in byname:
        sys.exit(f"module {name} neither built in nor in modules.dep")
    visit(byname[name])
print("\n".join(order))
PY
    while read -r m; do
        mkdir -p "$IR/lib/modules/$(dirname "$m")"
        cp "$MODDIR/$m" "$IR/lib/modules/$m"
    done < "$IR/modules.list"
    (cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
    rm -rf "$IR"
    mv "$INITRD.tmp" "$INITRD"
    echo "$KEY" > "$CACHE/initramfs.key"
fi
cp "$CACHE/kernel/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
say "ready: kernel $KVER, $(du -h "$CACHE/rootfs.img" | cut -f1) rootfs.img (sparse), initramfs $(du -h "$INITRD" | cut -f1)"
