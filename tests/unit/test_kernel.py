from ovslat.engine.kernel import possible_cpus, resolve_symbol


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
