"""Flow filters (--src-ip --dst-ip --src-port --dst-port --protocol), validated
once here and handed to the BPF program through its config map."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ovslat.abi import ConfigFlag
from ovslat.errors import UserError

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}

F_SRC_IP, F_DST_IP = ConfigFlag.SRC_IP, ConfigFlag.DST_IP
F_SRC_PORT, F_DST_PORT, F_PROTOCOL = ConfigFlag.SRC_PORT, ConfigFlag.DST_PORT, ConfigFlag.PROTOCOL


@dataclass(frozen=True)
class Filters:
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    protocol: str = "all"
    # the seed tools' meaning: --src-port/--dst-port match either port of the packet
    ports_either: bool = False

    @classmethod
    def parse(
        cls,
        src_ip: str | None = None,
        dst_ip: str | None = None,
        src_port: str | int | None = None,
        dst_port: str | int | None = None,
        protocol: str | None = None,
        ports_either: bool = False,
    ) -> Filters:
        proto = (protocol or "all").lower()
        if proto != "all" and proto not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}: use one of tcp, udp, icmp, all")
        f = cls(
            _ip(src_ip, "--src-ip"),
            _ip(dst_ip, "--dst-ip"),
            _port(src_port, "--src-port"),
            _port(dst_port, "--dst-port"),
            proto,
            ports_either,
        )
        if proto == "icmp" and (f.src_port is not None or f.dst_port is not None):
            raise UserError("--src-port/--dst-port cannot be used with --protocol icmp")
        return f

    def config_fields(self) -> dict[str, int]:
        """Values for struct config (bpf/ovslat.h)."""
        flags, out = 0, {"src_ip": 0, "dst_ip": 0, "src_port": 0, "dst_port": 0, "protocol": 0}
        if self.src_ip:
            flags |= F_SRC_IP
            out["src_ip"] = _be32(self.src_ip)
        if self.dst_ip:
            flags |= F_DST_IP
            out["dst_ip"] = _be32(self.dst_ip)
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

    def describe(self) -> str:
        parts = [
            f"{k.replace('_', '-')}={v}"
            for k, v in (
                ("src_ip", self.src_ip),
                ("dst_ip", self.dst_ip),
                ("src_port", self.src_port),
                ("dst_port", self.dst_port),
            )
            if v is not None
        ]
        parts.append(f"protocol={self.protocol}")
        return " ".join(parts)

    def as_dict(self) -> dict:
        return {
            "src_ip": self.src_ip,
            "dst_ip": self.dst_ip,
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "protocol": self.protocol,
            **({"ports": "either"} if self.ports_either else {}),
        }


def _ip(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise UserError(
            f"{flag} {value!r} is not an IP address (expected IPv4, e.g. 198.18.0.1)"
        ) from None
    if addr.version != 4:
        raise UserError(f"{flag} {value}: only IPv4 filters are supported")
    return str(addr)


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


def _be32(ip: str) -> int:
    # struct config holds addresses as the kernel does (network byte order),
    # written through a little-endian u32 field.
    return int.from_bytes(socket.inet_aton(ip), "little")
