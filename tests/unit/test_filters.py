import pytest

from ovslat.abi import ConfigFlag
from ovslat.errors import UserError
from ovslat.model.filters import F_DST_IP, F_DST_PORT, F_PROTOCOL, F_SRC_IP, F_SRC_PORT, Filters


def test_no_filters():
    f = Filters.parse()
    assert f.config_fields()["flags"] == 0
    assert f.describe() == "protocol=all"
    assert f.net_keys() == {"src_nets": [], "dst_nets": []}


def test_all_filters_encode_like_the_kernel():
    f = Filters.parse("198.18.0.2", "198.18.0.1", "1000", 2181, "TCP")
    cfg = f.config_fields()
    assert cfg["flags"] == F_SRC_IP | F_DST_IP | F_SRC_PORT | F_DST_PORT | F_PROTOCOL
    assert cfg["dst_port"] == 2181 and cfg["src_port"] == 1000
    assert cfg["protocol"] == 6
    # struct net_key: the family, then the address bytes as the packet holds them
    assert f.net_keys()["src_nets"] == [(4, 32, bytes([198, 18, 0, 2]) + bytes(12))]


def test_networks_of_both_families_repeated_or_comma_separated():
    f = Filters.parse(dst_ip=["2001:2:0:1::/64,198.18.0.0/15", "2001:2::7"], family="all")
    assert f.dst_ip == ("2001:2:0:1::/64", "198.18.0.0/15", "2001:2::7")
    keys = f.net_keys()["dst_nets"]
    assert keys[0] == (6, 64, bytes.fromhex("20010002000000010000000000000000"))
    assert keys[1][:2] == (4, 15) and keys[2][:2] == (6, 128)
    assert f.describe() == "dst-ip=2001:2:0:1::/64,198.18.0.0/15,2001:2::7 protocol=all"
    assert Filters.from_dict(f.as_dict()) == f


def test_family_and_icmpv6():
    f = Filters.parse(family="6", protocol="icmp6")
    cfg = f.config_fields()
    assert cfg["flags"] == ConfigFlag.FAMILY | F_PROTOCOL
    assert cfg["family"] == 6 and cfg["protocol"] == 58 and f.protocol == "icmpv6"
    assert Filters.parse(family="ipv4").family == "4"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"src_ip": "300.1.1.1"}, "not an IP address or network"),
        ({"dst_ip": "2001:2::/129"}, "prefix length must be 0-128 for IPv6"),
        ({"dst_ip": "198.18.0.0/33"}, "prefix length must be 0-32 for IPv4"),
        ({"dst_ip": "198.18.0.1/24"}, "did you mean 198.18.0.0/24"),
        ({"dst_ip": "2001:2::/x"}, "prefix length"),
        ({"family": "5"}, "--family 4, 6 or all"),
        ({"family": "6", "dst_ip": "198.18.0.1"}, "--dst-ip is IPv4 but --family 6 is not"),
        ({"protocol": "icmp", "family": "6"}, "--protocol icmp is IPv4"),
        ({"src_ip": "198.18.0.1", "dst_ip": "2001:2::1"}, "no packet can match"),
        ({"dst_ip": [f"198.18.{i // 256}.{i % 256}" for i in range(257)]}, "at most 256"),
        ({"dst_port": "70000"}, "outside 0-65535"),
        ({"src_port": "-1"}, "outside 0-65535"),
        ({"dst_port": "http"}, "not a port number"),
        ({"protocol": "sctp"}, "unknown protocol"),
        ({"protocol": "icmp", "dst_port": 1}, "cannot be used with --protocol icmp"),
        ({"protocol": "icmpv6", "src_port": 1}, "cannot be used with --protocol icmpv6"),
    ],
)
def test_bad_filters(kwargs, message):
    with pytest.raises(UserError, match=message):
        Filters.parse(**kwargs)
