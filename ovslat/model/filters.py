"""Flow filters (--src-ip --dst-ip --family --src-port --dst-port --protocol),
validated once here and handed to the BPF program: struct config for the
family, ports and protocol, a longest-prefix-match trie per address filter
(src_nets, dst_nets) for the networks."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ovslat.abi import MAX_NETS, ConfigFlag
from ovslat.errors import UserError

PROTOCOLS = {
    "tcp": socket.IPPROTO_TCP,
    "udp": socket.IPPROTO_UDP,
    "icmp": socket.IPPROTO_ICMP,  # IPv4's
    "icmpv6": socket.IPPROTO_ICMPV6,
}
_PROTOCOL_ALIASES = {"icmp6": "icmpv6", "ipv6-icmp": "icmpv6"}
# the family a protocol belongs to, when it has one
_PROTOCOL_FAMILY = {"icmp": 4, "icmpv6": 6}
FAMILIES = ("all", "4", "6")
_FAMILY_ALIASES = {"ipv4": "4", "inet": "4", "ipv6": "6", "inet6": "6", "any": "all"}

F_SRC_IP, F_DST_IP = ConfigFlag.SRC_IP, ConfigFlag.DST_IP
F_SRC_PORT, F_DST_PORT, F_PROTOCOL = ConfigFlag.SRC_PORT, ConfigFlag.DST_PORT, ConfigFlag.PROTOCOL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Filters:
    # networks as the user wrote them, normalised ("198.18.0.1", "2001:2::/48")
    src_ip: tuple[str, ...] = ()
    dst_ip: tuple[str, ...] = ()
    src_port: int | None = None
    dst_port: int | None = None
    protocol: str = "all"
    family: str = "all"  # "4", "6" or "all"
    # the seed tools' meaning: --src-port/--dst-port match either port of the packet
    ports_either: bool = False

    @classmethod
    def parse(
        cls,
        src_ip: str | Iterable[str] | None = None,
        dst_ip: str | Iterable[str] | None = None,
        src_port: str | int | None = None,
        dst_port: str | int | None = None,
        protocol: str | None = None,
        family: str | int | None = None,
        ports_either: bool = False,
    ) -> Filters:
        proto = (protocol or "all").lower()
        proto = _PROTOCOL_ALIASES.get(proto, proto)
        if proto != "all" and proto not in PROTOCOLS:
            raise UserError(
                f"unknown protocol {protocol!r}: use one of tcp, udp, icmp, icmpv6, all"
            )
        fam = str(family if family is not None else "all").lower()
        fam = _FAMILY_ALIASES.get(fam, fam)
        if fam not in FAMILIES:
            raise UserError(f"unknown address family {family!r}: use --family 4, 6 or all")
        f = cls(
            _nets(src_ip, "--src-ip"),
            _nets(dst_ip, "--dst-ip"),
            _port(src_port, "--src-port"),
            _port(dst_port, "--dst-port"),
            proto,
            fam,
            ports_either,
        )
        if proto in ("icmp", "icmpv6") and (f.src_port is not None or f.dst_port is not None):
            raise UserError(f"--src-port/--dst-port cannot be used with --protocol {proto}")
        f._check_families()
        return f

    @classmethod
    def from_dict(cls, d: dict) -> Filters:
        """The inverse of as_dict (a run's start record)."""
        return cls.parse(
            d.get("src_ip"),
            d.get("dst_ip"),
            d.get("src_port"),
            d.get("dst_port"),
            d.get("protocol"),
            d.get("family"),
            d.get("ports") == "either",
        )

    def _check_families(self) -> None:
        """A filter no packet can pass is the user's mistake: say so."""
        what = []
        if self.family != "all":
            what.append((f"--family {self.family}", {int(self.family)}))
        if self.protocol in _PROTOCOL_FAMILY:
            what.append((f"--protocol {self.protocol}", {_PROTOCOL_FAMILY[self.protocol]}))
        for flag, nets in (("--src-ip", self.src_ip), ("--dst-ip", self.dst_ip)):
            if nets:
                what.append((flag, {_net(n).version for n in nets}))
        possible = {4, 6}
        for i, (flag, fams) in enumerate(what):
            possible &= fams
            if not possible:
                before = " and ".join(w for w, _ in what[:i])
                raise UserError(
                    f"{flag} is {_family_words(fams)} but {before} "
                    f"{'is' if i == 1 else 'are'} not: no packet can match (drop one)"
                )

    def config_fields(self) -> dict[str, int]:
        """Values for struct config (bpf/ovslat.h)."""
        flags, out = 0, {"family": 0, "src_port": 0, "dst_port": 0, "protocol": 0}
        if self.src_ip:
            flags |= F_SRC_IP
        if self.dst_ip:
            flags |= F_DST_IP
        if self.family != "all":
            flags |= ConfigFlag.FAMILY
            out["family"] = int(self.family)
        if self.src_port is not None:
            flags |= F_SRC_PORT
            out["src_port"] = self.src_port
        if self.dst_port is not None:
            flags |= F_DST_PORT
            out["dst_port"] = self.dst_port
        if self.protocol != "all":
            flags |= F_PROTOCOL
            out["protocol"] = PROTOCOLS[self.protocol]
        if self.ports_either:
            flags |= ConfigFlag.PORTS_EITHER
        out["flags"] = flags
        return out

    def net_keys(self) -> dict[str, list[tuple[int, int, bytes]]]:
        """The tries' entries, map name -> [(family, prefix length, 16 address
        bytes in network order)] (struct net_key)."""
        return {
            "src_nets": [_key(n) for n in self.src_ip],
            "dst_nets": [_key(n) for n in self.dst_ip],
        }

    def describe(self) -> str:
        parts = [
            f"{k.replace('_', '-')}={v}"
            for k, v in (
                ("src_ip", ",".join(self.src_ip) or None),
                ("dst_ip", ",".join(self.dst_ip) or None),
                ("family", None if self.family == "all" else self.family),
                ("src_port", self.src_port),
                ("dst_port", self.dst_port),
            )
            if v is not None
        ]
        parts.append(f"protocol={self.protocol}")
        return " ".join(parts)

    def as_dict(self) -> dict:
        return {
            "src_ip": list(self.src_ip) or None,
            "dst_ip": list(self.dst_ip) or None,
            "family": self.family,
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "protocol": self.protocol,
            **({"ports": "either"} if self.ports_either else {}),
        }


def _family_words(fams: set[int]) -> str:
    return " and ".join(f"IPv{v}" for v in sorted(fams))


def _net(text: str) -> Network:
    return ipaddress.ip_network(text)


def _key(text: str) -> tuple[int, int, bytes]:
    n = _net(text)
    return n.version, n.prefixlen, n.network_address.packed.ljust(16, b"\0")


def _nets(value: str | Iterable[str] | None, flag: str) -> tuple[str, ...]:
    """Addresses and networks, repeated or comma-separated, IPv4 or IPv6."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for text in str(item).split(","):
            text = text.strip()
            if not text:
                continue
            out.append(_one_net(text, flag))
    if len(out) > MAX_NETS:
        raise UserError(f"{flag}: {len(out)} networks, at most {MAX_NETS}")
    return tuple(dict.fromkeys(out))


def _one_net(text: str, flag: str) -> str:
    addr, slash, plen = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UserError(
            f"{flag} {text!r} is not an IP address or network "
            "(e.g. 198.18.0.1, 198.18.0.0/15, 2001:2::1, 2001:2::/48)"
        ) from None
    if not slash:
        return str(ip)
    bits = 32 if ip.version == 4 else 128
    if not plen.isdigit() or int(plen) > bits:
        raise UserError(f"{flag} {text!r}: the prefix length must be 0-{bits} for IPv{ip.version}")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        loose = ipaddress.ip_network(text, strict=False)
        raise UserError(
            f"{flag} {text!r} has host bits set past /{plen}: did you mean {loose}?"
        ) from None
    return str(net.network_address) if net.prefixlen == bits else str(net)


def _port(value: str | int | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise UserError(f"{flag} {port} is outside 0-65535")
    return port
