#!/bin/busybox sh
# Stage 1 of the lab guest (PID 1 in the initramfs): mount this machine's
# root (9p, read-only) under a tmpfs overlay and switch into it.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod /mods/$m; done
arg() { sed -n "s/.*ovslat\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
fail() { echo "lab init: $*"; echo o >/proc/sysrq-trigger; sleep 5; }
opts=trans=virtio,version=9p2000.L,msize=262144
# cache=loose: the host root is read-only to the guest, so caching it is safe,
# and it makes Python imports ~10x faster than uncached 9p.
mount -t 9p -o $opts,ro,cache=loose hostroot /lower || fail "cannot mount the host root over 9p"
mount -t tmpfs -o size=3g tmpfs /upper && mkdir /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
  || fail "cannot mount the overlay"
run=$(arg run) init=$(arg init) modules=$(arg modules)
mkdir -p /newroot$run
mount -t 9p -o $opts results /newroot$run || fail "cannot mount the results share"
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /bin/sh "$init" "$run" "$modules"
