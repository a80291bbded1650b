#!/bin/sh
# Stage 2 of the lab guest, PID 1 in the overlay of this machine's root:
# make the Debian kernel's modules and headers usable, run the command, power off.
run=$1 modules=$2
# /run fresh (the host's netns and OVS state mean nothing here). /tmp stays
# the overlay's: writable already, and the checkout may live under it.
mount -t tmpfs tmpfs /run
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /run/netns /run/openvswitch
v=$(uname -r)
mkdir -p /lib/modules/$v
cp "$modules"/modules.* /lib/modules/$v/
ln -sfn "$modules/kernel" /lib/modules/$v/kernel
# what udev and kmod static nodes give a real host: /dev/net/tun (the netdev
# datapath's ports and the tap tests), backed by its module
modprobe -q tun
# the exact headers of this kernel when the host has them (6.1); other
# kernels compile against whatever tree ovslat finds, as on any host
if [ -d /usr/src/linux-headers-$v ] && [ ! -e /lib/modules/$v/build ]; then
  ln -sfn /usr/src/linux-headers-$v /lib/modules/$v/build
fi
hostname ovslat-lab
ip link set lo up
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
echo @@ovslat-lab-begin@@
sh "$run/cmd.sh" </dev/null
rc=$?
echo @@ovslat-lab-end@@
echo $rc >"$run/rc"
sync
echo o >/proc/sysrq-trigger
sleep 10
