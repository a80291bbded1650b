import pytest

from ovslat.errors import UserError
from ovslat.model.filters import F_DST_IP, F_DST_PORT, F_PROTOCOL, F_SRC_IP, F_SRC_PORT, Filters


def test_no_filters():
    f = Filters.parse()
    assert f.config_fields()["flags"] == 0
    assert f.describe() == "protocol=all"


def test_all_filters_encode_like_the_kernel():
    f = Filters.parse("198.18.0.2", "198.18.0.1", "1000", 2181, "TCP")
    cfg = f.config_fields()
    assert cfg["flags"] == F_SRC_IP | F_DST_IP | F_SRC_PORT | F_DST_PORT | F_PROTOCOL
    # iphdr.saddr read as a little-endian u32 on x86: first octet in the low byte
    assert cfg["src_ip"] == 198 | 18 << 8 | 0 << 16 | 2 << 24
    assert cfg["dst_port"] == 2181 and cfg["src_port"] == 1000
    assert cfg["protocol"] == 6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"src_ip": "300.1.1.1"}, "not an IP address"),
        ({"dst_ip": "fe80::1"}, "only IPv4"),
        ({"dst_port": "70000"}, "outside 0-65535"),
        ({"src_port": "-1"}, "outside 0-65535"),
        ({"dst_port": "http"}, "not a port number"),
        ({"protocol": "sctp"}, "unknown protocol"),
        ({"protocol": "icmp", "dst_port": 1}, "cannot be used with --protocol icmp"),
    ],
)
def test_bad_filters(kwargs, message):
    with pytest.raises(UserError, match=message):
        Filters.parse(**kwargs)
