from ovslat.engine.kernel import gro_normal_batch, possible_cpus, resolve_symbol, rx_ring


def test_symbol_resolution_prefers_exact_then_gcc_clones():
    syms = {
        "ip_rcv": 1,
        "enqueue_to_backlog.constprop.0": 2,
        "__netif_receive_skb.cold": 3,
        "__netif_receive_skb_core": 4,
        "foo.isra.0.part.0": 5,
    }
    assert resolve_symbol("ip_rcv", syms) == "ip_rcv"
    assert resolve_symbol("enqueue_to_backlog", syms) == "enqueue_to_backlog.constprop.0"
    # a .cold part is never a function entry; a longer name is another function
    assert resolve_symbol("__netif_receive_skb", syms) is None
    assert resolve_symbol("foo", syms) == "foo.isra.0.part.0"


def test_possible_cpus(tmp_path):
    p = tmp_path / "possible"
    p.write_text("0-3\n")
    assert possible_cpus(str(p)) == 4
    p.write_text("0,2-5,7\n")
    assert possible_cpus(str(p)) == 8
    p.write_text("0\n")
    assert possible_cpus(str(p)) == 1


def test_rx_ring_holds_one_gro_list(tmp_path):
    """The per-CPU S2 -> S3 ring: a power of two that holds one GRO list
    (net.core.gro_normal_batch), 8 at least, 64 at most."""
    assert [rx_ring(b) for b in (None, 1, 8, 9, 16, 33, 64, 1000)] == [8, 8, 8, 16, 16, 64, 64, 64]
    p = tmp_path / "gro_normal_batch"
    p.write_text("12\n")
    assert gro_normal_batch(str(p)) == 12
    assert gro_normal_batch(str(tmp_path / "none")) is None
