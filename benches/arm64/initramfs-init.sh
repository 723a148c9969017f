#!/bin/busybox sh
# PID 1 of the aarch64 benchmark VM's initramfs (packed by build.sh with a static
# busybox and the modules listed in /modules.list): load the virtio-blk, ext4 and 9p
# modules, mount the ext4 rootfs (/dev/vda) and the 9p share "run" (the host's run
# directory: repo tarball, settings, results), then switch_root to the guest script
# that came through the share (benches/arm64/guest.sh). Any failure powers the VM
# off: the host sees no status file and reports the console log.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "initramfs: $*" >&2
    poweroff -f
    sleep 60
}

while read -r m; do
    insmod "/lib/modules/$m" 2>/dev/null || echo "initramfs: insmod $m failed (built in?)" >&2
done < /modules.list

i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
# read-write: CRIU 3.17's parasite creates a directory in / at dump time (a
# read-only root fails with EROFS, measured); ext4's journal covers a killed VM
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount /dev/vda"
mkdir -p /newroot/mnt/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 run /newroot/mnt/run \
    || fail "cannot mount the 9p share 'run'"
[ -f /newroot/mnt/run/guest.sh ] || fail "no guest.sh in the run share"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/bash /mnt/run/guest.sh
