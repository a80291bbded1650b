"""The seed tools' text as their code prints it (format facts, seen side by
side with the tools in the lab: tests/lab/seed_side_by_side.py)."""

from ovslat.abi import DebugCounter
from ovslat.model.events import SlowEvent
from ovslat.model.snapshot import Counters, Interface, InterfaceStats
from ovslat.output import seedtext
from tests.unit.test_render import hist

RULE = "=" * 80


def stats(debug=()):
    return InterfaceStats(
        Interface("br-int", 7, 4026531840),
        Counters(
            enqueued=4,
            received=4,
            ip_rcv=3,
            cross_cpu=1,
            flow_lookup_failures=2,
            queue_depth_sum=6,
            queue_depth_samples=4,
            queue_depth_max=3,
            slow=1,
        ),  # fmt: skip
        {
            "enqueue_to_receive": hist([500, 1500, 2500, 9000]),
            "receive_to_ip": hist([100, 200, 300]),
        },
        debug,
    )


def event(**kw):
    base = dict(
        number=3, wall_s=1700000000.25, interface="br-int", latency_ns=1_234_567,
        threshold_ns=999_999, protocol="TCP", src="198.18.0.2", dst="198.18.0.1", sport=40000,
        dport=2181, enqueue_cpu=0, receive_cpu=1, ts_enqueue_ns=100, ts_receive_ns=1_234_667,
        queue_depth=5, task="ksoftirqd/1", pid=20, stack=("__netif_receive_skb+0x5 [kernel]",),
    )  # fmt: skip
    base.update(kw)
    return SlowEvent(**base)


def test_interval_report_lines():
    lines = seedtext.interval_report(stats(), 1700000000.0, 5.0)
    assert lines[:4] == ["", RULE, lines[2], RULE]
    assert lines[2].endswith("] Enqueue → IP_RCV Latency Report (Interval: 5.0s)")
    assert lines[4:] == [
        "", "Latency Measurements:", "-" * 80, "",
        "  STAGE1_enqueue_to_backlog -> STAGE2___netif_receive_skb:",
        "    Total samples: 4",
        "    Latency distribution:",
        "      1-1us           :      1 ( 25.0%) |********************                    |",
        "      2-3us           :      2 ( 50.0%) |****************************************|",
        "      8-15us          :      1 ( 25.0%) |********************                    |",
        "    ^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^",
        "",
        "  STAGE2___netif_receive_skb -> STAGE3_ip_rcv:",
        "    Total samples: 3",
        "    Latency distribution:",
        "      1-1us           :      3 (100.0%) |****************************************|",
        "", RULE, "Packet Counters (Interval):",
        "  Enqueued packets:        4",
        "  Received packets:        4",
        "  IP layer packets:        3",
        "  Cross-CPU migrations:    1",
        "  Parse failures:          0",
        "  Flow lookup failures:    2",
        "", "Backlog Queue Statistics:",
        "  Average queue depth: 1.50 packets",
        "  Total enqueue operations: 4",
    ]  # fmt: skip


def test_extended_adds_ovslat_lines_only():
    plain = seedtext.interval_report(stats(), 1700000000.0, 5.0)
    more = seedtext.interval_report(stats(), 1700000000.0, 5.0, extended=True)
    added = [line for line in more if line not in plain]
    assert [a.split()[0] for a in added] == ["p50", "p50", "Dropped", "In", "Synchronous", "Max"]
    assert [line for line in more if line in plain or line == ""] == plain


def test_empty_interval_and_cumulative():
    empty = InterfaceStats(Interface("x", 1, 1), Counters(), {s: hist([]) for s in
                           ("enqueue_to_receive", "receive_to_ip")})  # fmt: skip
    assert seedtext.interval_report(empty, 0, 1.0)[4:] == [
        "No latency data collected in this interval"
    ]
    assert seedtext.cumulative_report(empty, 0, 9.0)[4:] == ["No cumulative latency data collected"]
    cum = seedtext.cumulative_report(stats(), 0, 9.0, events=2)
    assert cum[2].endswith("] CUMULATIVE Enqueue → IP_RCV Latency Report (Total Duration: 9.0s)")
    assert "Latency Measurements (Cumulative):" in cum
    assert "Packet Counters (Cumulative):" in cum
    assert "Backlog Queue Statistics (Cumulative):" in cum
    assert cum[-4:] == ["  Total enqueue operations: 4", "", "Total High Latency Events: 2", RULE]
    tracked = seedtext.interval_report(stats(), 0, 1.0, events=1)
    assert tracked[-3:] == ["", "High Latency Events: 1", RULE]


def test_debug_block_in_the_seeds_code_points():
    d = [0] * len(DebugCounter)
    for name, v in (("HANDLE_ENTRY", 30), ("PARSE_ENTRY", 30), ("PARSE_SUCCESS", 25),
                    ("IP_FILTER", 2), ("PROTO_FILTER", 3), ("PORT_FILTER", 4),
                    ("FLOW_LOOKUP", 16), ("FLOW_FOUND", 15), ("LATENCY_SUBMIT", 15)):  # fmt: skip
        d[DebugCounter[name]] = v
    st = stats((tuple(d), tuple(d), tuple([0] * len(DebugCounter))))
    lines = seedtext.debug_block(st, (100, 200, 300))
    assert lines[:4] == ["", RULE, "DEBUG STATISTICS (Stage Execution Flow)", RULE]
    s2 = lines[lines.index("STAGE2___netif_receive_skb:") + 1 :]
    assert s2[:11] == [
        "  PROBE_ENTRY              : 200",
        "  HANDLE_ENTRY             : 30",
        "  PARSE_ENTRY              : 30",
        "  PARSE_SUCCESS            : 16",  # 25 parsed, 9 of them filtered: the seed's meaning
        "  IP_FILTER                : 2",
        "  PROTO_FILTER             : 3",
        "  PORT_FILTER              : 4",
        "  FLOW_LOOKUP              : 16",
        "  FLOW_FOUND               : 15",
        "  FLOW_NOT_FOUND           : 1",
        "  LATENCY_SUBMIT           : 15",
    ]
    # a point with only PROBE_ENTRY still shows it; all-zero rows are left out
    assert lines[-2:] == ["STAGE3_ip_rcv:", "  PROBE_ENTRY              : 300"]


def test_threshold_event_and_summary():
    lines = seedtext.threshold_event(event(), 1000)
    assert lines == [
        "", RULE, "HIGH LATENCY EVENT #3", RULE, lines[4], "",
        "Latency: 1.234 ms (threshold: 1.000 ms)", "",
        "Flow Information:", "  Protocol: TCP", "  Source: 198.18.0.2:40000",
        "  Destination: 198.18.0.1:2181", "",
        "CPU Information:", "  Enqueue CPU: 0", "  Receive CPU: 1",
        "  ^^^ CROSS-CPU MIGRATION DETECTED ^^^", "",
        "Timing Information:", "  Enqueue timestamp: 100 ns", "  Receive timestamp: 1234667 ns",
        "  Queue depth: 5 packets", "",
        "Kernel Stack Trace:", "  __netif_receive_skb+0x5 [kernel]", RULE,
    ]  # fmt: skip
    assert lines[4].startswith("Timestamp: ") and lines[4].endswith(".250000")
    icmp = seedtext.threshold_event(event(protocol="ICMP", sport=None, dport=None, stack=()), 5)
    assert "  Protocol: PROTO_1" in icmp and "  Source: 198.18.0.2:0" in icmp
    assert icmp[-3:] == ["", "Kernel Stack Trace: [unavailable]", RULE]
    assert seedtext.threshold_summary(stats(), 1) == [
        "", RULE, "SUMMARY STATISTICS", RULE, "Packet Counters:",
        "  Enqueued packets:        4", "  Received packets:        4",
        "  Threshold breaches:      1", "  Below threshold:         3",
        "  Parse failures:          0", "  Flow lookup failures:    2", "",
        "Total events captured:     1", "Threshold breach rate:     25.00%", RULE,
    ]  # fmt: skip


def test_summary_tool_event():
    lines = seedtext.summary_event(event(stage="receive_to_ip", enqueue_cpu=1))
    assert lines[6:] == [
        "Latency: 1234.000 us (1.234000 ms)", "",
        "Stage Transition:", "  STAGE2___netif_receive_skb -> STAGE3_ip_rcv", "",
        "CPU Information:", "  Start CPU: 1", "  End CPU: 1", "",
        "Packet Information:", "  Source IP: 198.18.0.2", "  Dest IP: 198.18.0.1",
        "  Protocol: TCP", "  Source Port: 40000", "  Dest Port: 2181", RULE,
    ]  # fmt: skip
    s1 = seedtext.summary_event(event())
    assert "  ^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^" in s1
    assert "  ^^^ CPU MIGRATION DETECTED ^^^" in s1


def test_banners():
    s = seedtext.Settings("br-int", 7, "tcp", None, "198.18.0.1", 0, 2181, 5, 0, 100, True)
    assert seedtext.summary_banner(s)[3:10] == [
        "Target interface: br-int (ifindex 7)", "Protocol filter: TCP",
        "Destination IP: 198.18.0.1", "Destination port: 2181", "Statistics interval: 5 seconds",
        "Total duration: Unlimited (run until Ctrl-C)",
        "High-latency event tracking: ENABLED (threshold: 100 us = 0.100 ms)",
    ]  # fmt: skip
    assert seedtext.summary_attached("kprobe", True, 5)[1:6] == [
        "BPF program loaded successfully", "All 3 kprobes attached:",
        "  - kprobe__enqueue_to_backlog", "  - kprobe____netif_receive_skb", "  - kprobe__ip_rcv",
    ]  # fmt: skip
    t = seedtext.Settings("br-int", 7, threshold_us=1000)
    assert seedtext.threshold_banner(t)[4:6] == [
        "Latency threshold: 1.000 ms (1000 us)",
        "Protocol filter: ALL",
    ]
    assert seedtext.threshold_attached("kprobe")[2:5] == [
        "Kprobes attached:",
        "  - kprobe__enqueue_to_backlog",
        "  - kprobe____netif_receive_skb",
    ]


def test_synchronous_receives_are_the_seeds_lookup_failures():
    """The seed's tool finds no S1 record for a packet received in place, and
    counts it as a flow lookup failure: its format keeps that meaning."""
    st = stats()
    st = InterfaceStats(
        st.iface, Counters(**{**st.counters.__dict__, "received_sync": 5}), st.stages
    )
    lines = seedtext.interval_report(st, 1700000000.0, 5.0)
    assert "  Flow lookup failures:    7" in lines
    more = seedtext.interval_report(st, 1700000000.0, 5.0, extended=True)
    assert "  Synchronous receives:    5  (of the flow lookup failures)" in more
