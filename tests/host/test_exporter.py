"""`ovslat export` for real: the CLI as a subprocess measuring veths in our own
namespaces, a real Prometheus (Debian's) scraping it on loopback, and the
counts it stores equal to the packets sent; a bridge followed through a
private OVSDB, with removed ports leaving the exposition."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from ovslat.scenario import testbed
from tests.ovslat_proc import OVSLAT, REPO, ovslat_prog_ids, programs_left
from tests.unit.test_exporter import dashboard_queries

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
UDP_PORT = 5001
N = 500
SERIES_PER_INTERFACE = 82  # docs/fleet.md, 1 bucket per octave, no drops


def netns(label: str) -> testbed.Netns:
    """testbed's namespace under this file's own prefix (others run ovt-* tests
    on this machine at the same time)."""
    ns = testbed.Netns(label)
    ns.name = f"ovx-{label}-{secrets.token_hex(3)}"
    return ns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, accept: str | None = None, timeout_s: float = 5.0) -> str:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return r.read().decode()


def bpf_progs() -> list[dict]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def bpf_prog_ids() -> set[int]:
    return {p["id"] for p in bpf_progs()}


def progs_held_by(pid: int) -> set[int]:
    """IDs of the BPF programs whose fds `pid` holds (its fdinfo says prog_id)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids |= {int(line.split()[1]) for line in f if line.startswith("prog_id:")}
        except OSError:  # closed meanwhile
            pass
    return ids


class Exporter:
    """`ovslat export ... --listen 127.0.0.1:<free port>` running; ready once it
    says it is serving (probes attached, first read published)."""

    def __init__(self, args: list[str], timeout_s: float = 60.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.proc = subprocess.Popen(
            OVSLAT + ["export", *args, "--listen", f"127.0.0.1:{self.port}"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_line("serving http://", timeout_s)

    def _pump(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout_s}s: {self.stderr}") from None
            if line is None:
                raise AssertionError(f"exporter exited {self.proc.wait()}: {self.stderr}")
            if text in line:
                return line

    def scrape(self, accept: str | None = None) -> str:
        return http_get(self.url, accept)

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Prometheus:
    """Debian's prometheus as our own process: temp config and storage, a free
    loopback port, a 1 s scrape of `target`; ended by its pid."""

    def __init__(self, target: str):
        self.dir = tempfile.mkdtemp(prefix="ovx-prom-")
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        with open(f"{self.dir}/prometheus.yml", "w") as f:
            f.write(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n"
                f"  - job_name: ovslat\n    static_configs: [{{targets: ['{target}']}}]\n"
            )
        self.log = open(f"{self.dir}/prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.dir}/prometheus.yml",
                f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    def __enter__(self) -> Prometheus:
        try:
            testbed.wait_until(self._ready, 30, "prometheus")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self._log()}"
        try:
            http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout_s=1)
            return True
        except OSError:
            return False

    def _log(self) -> str:
        with open(f"{self.dir}/prometheus.log") as f:
            return f.read()[-2000:]

    def query(self, promql: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": promql})
        reply = json.loads(http_get(f"{self.api}/query?{q}"))
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The one series' value; None while there is none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, want: float, timeout_s: float = 20.0) -> None:
        seen = []

        def reached():
            seen.append(self.value(promql))
            return seen[-1] == want

        try:
            testbed.wait_until(reached, timeout_s, promql)
        except TimeoutError:
            raise AssertionError(f"{promql}: want {want}, last {seen[-5:]}") from None

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def check_exposition(text: str, openmetrics: str) -> list:
    """Both parsers of prometheus_client and promtool's linter accept it."""
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert {f.name for f in parse_openmetrics(openmetrics)} >= {
        "ovslat_enqueued",
        "ovslat_latency_seconds",
    }
    r = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return samples


@pytest.fixture
def client():
    """A client namespace on veth ovx-p0 (198.19.77.1) <-> ovx-p1 (198.19.77.2), ARP resolved."""
    with netns("p") as ns:
        testbed.veth("ovx-p0", ns, "ovx-p1", "198.19.77.1", "198.19.77.2", prefix=25)
        testbed.ping(ns, "198.19.77.1", 1)
        yield ns


@pytest.mark.skipif(not os.path.exists(PROMETHEUS), reason="Debian package prometheus missing")
def test_prometheus_scrapes_exact_counts(client, auto_backend):
    sel = 'interface="ovx-p0"'
    v4 = sel + ',family="ipv4"'  # the stage counters are split per address family
    args = ["-i", "ovx-p0", "--protocol", "udp", "--dst-port", str(UDP_PORT), "--interval", "0.5"]
    with Exporter(args) as ex:
        ours = progs_held_by(ex.proc.pid)
        assert len(ours) >= 4 and ours <= bpf_prog_ids()  # S1, S2, S3 hooks + kfree_skb
        with Prometheus(f"127.0.0.1:{ex.port}") as prom:
            # every series exists, at 0, before the first packet
            prom.wait_value(f"ovslat_enqueued_total{{{v4}}}", 0)
            testbed.send_udp(client, "198.19.77.1", UDP_PORT, N)
            prom.wait_value(f"ovslat_enqueued_total{{{v4}}}", N)
            prom.wait_value(f"ovslat_received_total{{{v4}}}", N)
            assert prom.value(f"sum without (family) (ovslat_received_total{{{sel}}})") == N
            assert prom.value(f'ovslat_received_total{{{sel},family="ipv6"}}') == 0
            try:
                prom.wait_value(f"ovslat_ip_rcv_total{{{v4}}}", N)
            except AssertionError as e:
                # seen while another ovslat ran on this host (an engine issue, not export's)
                others = [p["name"] for p in bpf_progs() if p["type"] == "netfilter"]
                raise AssertionError(f"{e}; netfilter BPF programs loaded: {others}") from None
            for name in ("cross_cpu", "parse_failures", "flow_lookup_failures"):
                assert prom.value(f"ovslat_{name}_total{{{sel}}}") == 0, name
            assert prom.query(f"ovslat_dropped_total{{{sel}}}") == []
            for stage in ("enqueue_to_receive", "receive_to_ip"):
                hist = f'{sel},stage="{stage}"'
                prom.wait_value(f'ovslat_latency_seconds_bucket{{{hist},le="+Inf"}}', N)
                assert prom.value(f"ovslat_latency_seconds_count{{{hist}}}") == N
                p99 = prom.value(
                    f"histogram_quantile(0.99, ovslat_latency_seconds_bucket{{{hist}}})"
                )
                mean = prom.value(
                    f"ovslat_latency_seconds_sum{{{hist}}} / ovslat_latency_seconds_count{{{hist}}}"
                )
                assert 0 < mean < 1 and 0 < p99 < 1, (stage, mean, p99)
            # labels as documented: interface only (-i, our namespace), stage, le
            assert prom.value(f"count({{{sel}}})") == SERIES_PER_INTERFACE
            labels = prom.query(f"ovslat_enqueued_total{{{v4}}}")[0]["metric"]
            assert labels == {
                "__name__": "ovslat_enqueued_total",
                "interface": "ovx-p0",
                "family": "ipv4",
                "instance": f"127.0.0.1:{ex.port}",
                "job": "ovslat",
            }
            info = prom.query("ovslat_info")[0]["metric"]
            assert info["backend"] == auto_backend
            assert info["filters"] == f"dst-port={UDP_PORT} protocol=udp"
            # the Grafana dashboard's queries evaluate; its heatmap has every bucket
            results = [prom.query(q) for q in dashboard_queries()]
            assert len(results[0]) == 29 and all(r for r in results[:2]), results[:2]
            scrape_s = prom.value('scrape_duration_seconds{job="ovslat"}')
            scraped = prom.value('scrape_samples_scraped{job="ovslat"}')
            print(f"\nscrape: {scrape_s * 1000:.2f} ms, {scraped:.0f} samples")
        samples = check_exposition(
            ex.scrape(), ex.scrape("application/openmetrics-text; version=1.0.0")
        )
        got = {
            s.name: s.value
            for s in samples
            if s.labels == {"interface": "ovx-p0", "family": "ipv4"}
        }
        assert got["ovslat_enqueued_total"] == got["ovslat_ip_rcv_total"] == N
        assert ex.stop(signal.SIGTERM) == 0, ex.stderr
    left = programs_left(ovslat_prog_ids() - ours) & ours
    assert left == set(), f"BPF programs left attached: {left}"


def _ovs_netdev_free() -> bool:
    # A netdev-datapath ovs-vswitchd owns the one `ovs-netdev` tap; a second one
    # at the same time would fight over it (and remove it on exit).
    return not os.path.exists("/sys/class/net/ovs-netdev")


def test_bridge_followed_through_ovsdb():
    """Labels from discovery (role, bridge, datapath); a port added while
    exporting is measured within 2 s, a deleted one leaves the exposition;
    the per-hop transit through OVS counts every packet."""
    try:
        testbed.wait_until(_ovs_netdev_free, 120, "another test's ovs-netdev tap to go")
    except TimeoutError:
        pytest.skip("another private netdev-datapath OVS is running on this machine")
    br = "ovx-br"
    with testbed.OvsDaemons("netdev") as ovs, netns("u") as nu, netns("v") as nv:
        ovs.add_bridge(br)
        testbed.veth("ovx-u0", nu, "ovx-u1", None, "198.19.77.130", prefix=25)
        testbed.veth("ovx-v0", nv, "ovx-v1", None, "198.19.77.131", prefix=25)
        ovs.add_port(br, "ovx-u0", testbed.AS_UPLINK)
        testbed.address_port(br, "198.19.77.129", prefix=25)
        assert testbed.ping(nu, "198.19.77.129", 2) == 2
        with Exporter([br, "--db", ovs.db_sock, "--protocol", "icmp", "--interval", "0.2"]) as ex:
            text = ex.scrape()
            assert info_labels(text, "ovx-u0") == {
                "interface": "ovx-u0",
                "family": "ipv4",
                "role": "uplink",
                "bridge": br,
                "datapath": "netdev",
            }
            assert info_labels(text, br)["role"] == "internal"
            assert testbed.ping(nu, "198.19.77.129", 20) == 20

            def transit():
                return value(ex.scrape(), "ovslat_hop_latency_seconds_count", stage="transit")

            testbed.wait_until(lambda: transit() == 20, 10, "20 transits")
            text = ex.scrape()
            assert value(text, "ovslat_enqueued_total", family="ipv4", interface="ovx-u0") == 20
            # the tap without RPS receives synchronously: 20 receives without S1
            assert value(text, "ovslat_received_sync_total", family="ipv4", interface=br) == 20
            assert value(text, "ovslat_ip_rcv_total", family="ipv4", interface=br) == 20
            assert value(text, "ovslat_flow_lookup_failures_total", interface=br) == 0

            changed = time.monotonic()
            ovs.add_port(br, "ovx-v0", testbed.AS_UPLINK)
            ovs.del_port(br, "ovx-u0")
            testbed.wait_until(
                lambda: info_labels(ex.scrape(), "ovx-v0")
                and not info_labels(ex.scrape(), "ovx-u0"),
                10,
                "ovx-v0 in, ovx-u0 out",
            )
            assert time.monotonic() - changed <= 2.0 + 0.5
            text = ex.scrape()
            samples = check_exposition(text, ex.scrape("application/openmetrics-text"))
            assert not [s for s in samples if "ovx-u0" in s.labels.values()]  # hops too
            assert value(text, "ovslat_received_sync_total", family="ipv4", interface=br) == 20
            assert value(text, "ovslat_interfaces") == 2
            assert ex.stop(signal.SIGINT) == 0, ex.stderr
        assert any("ovx-u0 removed" in line for line in ex.stderr), ex.stderr


def value(text: str, name: str, **labels) -> float | None:
    found = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def info_labels(text: str, iface: str) -> dict | None:
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if (
                s.name == "ovslat_enqueued_total"
                and s.labels["interface"] == iface
                and s.labels["family"] == "ipv4"
            ):
                return s.labels
    return None
