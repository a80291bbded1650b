"""`ovslat demo`: a self-contained topology measured live. A client namespace
sends through a veth uplink into an OVS bridge whose internal port holds the
destination address — the seed's "Pattern 4" (uplink + bridge port), built
from nothing and torn down afterwards."""

from __future__ import annotations

import contextlib
import os

from ovslat.commands.watch import run
from ovslat.engine.session import WatchOptions
from ovslat.scenario import testbed

BRIDGE, UPLINK, PEER = "ovsdemo-br", "ovsdemo-up0", "ovsdemo-up1"
BRIDGE_IP, CLIENT_IP = "198.18.40.1", "198.18.40.2"


def demo(duration_s: float, interval_s: float, fmt: str, pps: float, attach: str) -> int:
    testbed.require_root()
    datapath = "system" if testbed.kernel_datapath() else "netdev"
    with testbed.OvsDaemons(datapath) as ovs, testbed.Netns("demo") as client:
        ovs.add_bridge(BRIDGE)
        testbed.veth(UPLINK, client, PEER, None, CLIENT_IP)
        ovs.add_port(BRIDGE, UPLINK)
        testbed.address_port(BRIDGE, BRIDGE_IP)
        testbed.ping(client, BRIDGE_IP, 3)
        # The kernel datapath's internal port always receives through netif_rx;
        # the netdev datapath's (a tap) only with RPS on, so give it RPS.
        every_cpu = format((1 << (os.cpu_count() or 1)) - 1, "x")
        steer = testbed.rps(BRIDGE, every_cpu) if datapath == "netdev" else contextlib.nullcontext()
        with steer:
            sender = testbed.paced_udp(client, BRIDGE_IP, 9, pps, duration_s + 10)
            try:
                return run(
                    WatchOptions(
                        interfaces=[UPLINK, BRIDGE],
                        interval_s=interval_s,
                        duration_s=duration_s,
                        fmt=fmt,
                        backend=attach,
                    )
                )
            finally:
                sender.terminate()
                sender.wait()
