"""The live table rendered to a recording console: what a person reads."""

import dataclasses

from rich.console import Console

from ovslat.output.live import table
from tests.unit.test_render import snapshot

CONTEXT = {
    "backend": "tracepoint",
    "s3": "x",
    "filters": {
        "src_ip": None,
        "dst_ip": None,
        "src_port": None,
        "dst_port": 53,
        "protocol": "udp",
    },
}


def render(snap, last_live=None) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(table(snap, CONTEXT, 12.0, last_live))
    return console.export_text()


def test_rows_header_and_values():
    text = render(snapshot())
    assert "backend tracepoint" in text and "filters dst-port=53 protocol=udp" in text
    assert "uptime 12s" in text and "probe cost 1000 ns/pkt" in text
    (row,) = (line for line in text.splitlines() if "veth0" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    # 4 packets in 2 s; 1 of 4 received on another CPU; queue 6/4 = 1.5, max 3
    assert cells[:2] == ["veth0", "2"]
    assert cells[7:] == ["25%", "0/2", "1.5/3"]
    assert cells[4] == "9.0"  # exact max, us


def test_gone_interface_keeps_its_last_figures():
    snap = snapshot()
    live = snap.interfaces[0]
    gone = dataclasses.replace(
        live,
        gone=True,
        counters=dataclasses.replace(
            live.counters, enqueued=0, received=0, cross_cpu=0, flow_lookup_failures=0
        ),
    )
    later = dataclasses.replace(snap, interfaces=(gone,))
    text = render(later, {0: (live, 2.0)})
    (row,) = (line for line in text.splitlines() if "veth0" in line)
    assert "veth0 gone" in row and "25%" in row
