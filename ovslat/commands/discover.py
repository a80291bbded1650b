"""`ovslat discover BRIDGE`: the bridge's interfaces, their roles, the kernel
device that receives for each, and whether (and why not) it is measurable."""

from __future__ import annotations

import json
import sys

from ovslat.discovery.topology import Bridge, receive_path


def as_dict(b: Bridge) -> dict:
    return {
        "bridge": b.name,
        "datapath_type": b.datapath_type,
        # UDP port -> tunnel type: packets to them measured by their inner packet
        "tunnel_ports": {str(port): kind for port, kind in b.tunnel_ports},
        "interfaces": [
            {
                "name": m.name,
                "role": m.role,
                "ovs_type": m.ovs_type,
                "ofport": m.ofport,
                "device": m.device,
                "ifindex": m.link.ifindex if m.link else None,
                "kind": (m.link.kind or "nic") if m.link else None,
                "mtu": m.link.mtu if m.link else None,
                "rps": m.link.rps if m.link else None,
                # a NIC's driver or a veth running XDP: NAPI + GRO
                "napi": m.link.napi if m.link else None,
                "receive": (receive_path(m.link) or None) if m.link else None,
                "workload": m.workload or None,
                # role underlay: the tunnel ports whose outer packets it receives
                "tunnels": list(m.tunnels) or None,
                # a pod's own end, measured in its namespace as well
                "peer": (
                    {
                        "name": m.peer.name,
                        "ifindex": m.peer.ifindex,
                        "netns": m.peer.netns,
                        "netns_inode": m.peer.netns_inode,
                    }
                    if m.peer
                    else None
                ),
                "measurable": m.measurable,
                "reason": m.reason,
                "warning": m.warning,
            }
            for m in b.members
        ],
    }


def render_table(b: Bridge) -> str:
    d = as_dict(b)
    cols = (
        "name",
        "role",
        "ovs_type",
        "ofport",
        "device",
        "ifindex",
        "kind",
        "mtu",
        "rps",
        "napi",
        "workload",
        "peer",
        "measurable",
    )

    def cell(r: dict, c: str) -> str:
        v = r[c]
        if c == "workload" and r["tunnels"]:
            return "tunnels " + ",".join(r["tunnels"])
        if v is None:
            return "-"
        if c == "peer":
            return f"{v['name']}@{v['netns']}"
        return str(v).lower() if isinstance(v, bool) else str(v)

    rows = [[cell(r, c) for c in cols] for r in d["interfaces"]]
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    lines = [
        f"bridge {b.name} (datapath {b.datapath_type})",
        "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for r in d["interfaces"]:
        if r["reason"]:
            lines.append(f"not measurable: {r['name']}: {r['reason']}")
        if r["warning"]:
            lines.append(f"warning: {r['warning']}")
    return "\n".join(lines) + "\n"


def discover(bridge: str, db: str, fmt: str, out=None) -> int:
    from ovslat.discovery.bridge import BridgeSource

    out = out or sys.stdout
    src = BridgeSource(bridge, db)
    try:
        b = src.current
    finally:
        src.close()
    out.write(json.dumps(as_dict(b)) + "\n" if fmt == "json" else render_table(b))
    return 0
