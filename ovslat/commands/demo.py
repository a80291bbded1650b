"""`ovslat demo`: a self-contained topology measured live. A client namespace
sends through a NIC-like uplink (a veth running XDP: NAPI + GRO) into an OVS
bridge whose internal port holds the
destination address — the seed's "Pattern 4" (uplink + bridge port) — and to
a pod behind the bridge, while a VM writes frames to the pod through its tap.
The bridge is followed through OVSDB, as on a real node: its pod's own eth0
is measured in the pod's namespace. Built from nothing, torn down afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess

from ovslat.commands.watch import run
from ovslat.engine.session import WatchOptions
from ovslat.scenario import testbed

BRIDGE, UPLINK, PEER = "ovsdemo-br", "ovsdemo-up0", "ovsdemo-up1"
POD_PORT, TAP = "ovsdemo-pod0", "ovsdemo-tap0"
BRIDGE_IP, CLIENT_IP, POD_IP, VM_IP = "198.18.40.1", "198.18.40.2", "198.18.40.10", "198.18.40.20"
# the pod's and the VM's OVSDB rows, as Antrea and nova write them
POD_IDS = {"pod-namespace": "demo", "pod-name": "web-0", "container-id": "ovslat-demo"}
VM_IDS = {"vm-uuid": "00000000-0000-4000-8000-0000000000d0"}


def demo(duration_s: float, interval_s: float, fmt: str, pps: float, attach: str) -> int:
    testbed.require_root()
    datapath = "system" if testbed.kernel_datapath() else "netdev"
    with (
        testbed.OvsDaemons(datapath) as ovs,
        testbed.Netns("demo") as client,
        testbed.Netns("web") as pod,
        contextlib.ExitStack() as stack,
    ):
        ovs.add_bridge(BRIDGE)
        testbed.veth(UPLINK, client, PEER, None, CLIENT_IP)
        testbed.nic_like(UPLINK)  # receives as a default NIC: NAPI + GRO, RPS off
        ovs.add_port(BRIDGE, UPLINK, testbed.AS_UPLINK)
        testbed.pod(POD_PORT, pod, POD_IP)
        ovs.add_port(BRIDGE, POD_PORT, *testbed.external_ids(POD_IDS))
        testbed.tap(TAP)
        stack.callback(testbed.sh, "ip", "link", "del", TAP, check=False)
        ovs.add_port(BRIDGE, TAP, *testbed.external_ids(VM_IDS))
        testbed.address_port(BRIDGE, BRIDGE_IP)
        testbed.ping(client, BRIDGE_IP, 3)
        testbed.ping(pod, BRIDGE_IP, 2)  # OVS learns the pod's MAC for the VM's frames
        # The kernel datapath's internal port always receives through netif_rx;
        # the netdev datapath's (a tap) only with RPS on, so give it RPS.
        if datapath == "netdev":
            every_cpu = format((1 << (os.cpu_count() or 1)) - 1, "x")
            stack.enter_context(testbed.rps(BRIDGE, every_cpu))
        runs_for = duration_s + 10
        senders = [
            testbed.paced_udp(client, BRIDGE_IP, 9, pps, runs_for),
            testbed.paced_udp(client, POD_IP, 9, pps / 4, runs_for),
            subprocess.Popen(
                testbed.tap_argv(
                    TAP,
                    int(pps / 4 * runs_for),
                    VM_IP,
                    POD_IP,
                    9,
                    pps / 4,
                    testbed.mac_of("eth0", pod),
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            return run(
                WatchOptions(
                    bridge=BRIDGE,
                    db=ovs.db_sock,
                    interval_s=interval_s,
                    duration_s=duration_s,
                    fmt=fmt,
                    backend=attach,
                )
            )
        finally:
            for s in senders:
                s.terminate()
                s.wait()
