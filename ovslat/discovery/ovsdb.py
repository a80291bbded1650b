"""Bridges, ports and interfaces from OVSDB, through the python-ovs IDL.
The only module that imports `ovs`. Never parses ovs-vsctl output.

The IDL keeps a live replica of the tables it registered: `poll()` applies
what changed since, so `watch` follows ports being added and deleted."""

from __future__ import annotations

import errno
import os
import time

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from ovslat.discovery import DEFAULT_DB
from ovslat.discovery.topology import OvsInterface
from ovslat.errors import UserError

DB_NAME = "Open_vSwitch"
_COLUMNS = {
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "type", "ofport", "options", "error", "external_ids"],
}


def _unreachable(remote: str, why: str) -> UserError:
    return UserError(
        f"cannot reach OVSDB at {remote} ({why}): is ovsdb-server running? "
        "check with `ovs-vsctl show`, or point --db at its socket"
    )


def _denied(remote: str) -> UserError:
    return UserError(
        f"cannot reach OVSDB at {remote}: permission denied for uid {os.geteuid()}, which needs "
        "search permission on the socket's directory and read-write on the socket (run as root, "
        "or see README, Installing: OVSDB access)"
    )


def _fetch_schema(remote: str, timeout_s: float) -> dict:
    if not remote.startswith(("unix:", "tcp:", "ssl:")):
        raise UserError(
            f"--db {remote!r} is not an OVSDB remote: use unix:PATH, tcp:IP:PORT or ssl:IP:PORT"
        )
    path = remote.removeprefix("unix:")
    if remote.startswith("unix:"):
        try:
            os.stat(path)
        except PermissionError:
            raise _denied(remote) from None
        except OSError:
            raise _unreachable(remote, "no such socket") from None
    err, stream = ovs.stream.Stream.open_block(
        ovs.stream.Stream.open(remote), int(timeout_s * 1000)
    )
    if err == errno.EACCES and remote.startswith("unix:"):
        raise _denied(remote)
    if err:
        raise _unreachable(remote, os.strerror(err))
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        err, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [DB_NAME]))
    finally:
        rpc.close()
    if err or reply is None or reply.error:
        raise _unreachable(remote, os.strerror(err) if err else str(reply and reply.error))
    return reply.result


class Ovsdb:
    def __init__(self, remote: str = DEFAULT_DB, timeout_s: float = 5.0):
        self.remote = remote
        helper = ovs.db.idl.SchemaHelper(schema_json=_fetch_schema(remote, timeout_s))
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        self._idl = ovs.db.idl.Idl(remote, helper)
        deadline = time.monotonic() + timeout_s
        while not self._idl.has_ever_connected():
            self._idl.run()
            if time.monotonic() > deadline:
                self.close()
                raise _unreachable(remote, "no reply to monitor request")
            poller = ovs.poller.Poller()
            self._idl.wait(poller)
            poller.timer_wait(100)
            poller.block()
        self.seqno = self._idl.change_seqno

    def poll(self) -> bool:
        """Apply changes that arrived; True when anything changed. Never blocks."""
        self._idl.run()
        changed = self._idl.change_seqno != self.seqno
        self.seqno = self._idl.change_seqno
        return changed

    def bridges(self) -> dict[str, str]:
        """name -> datapath_type ('' means system)."""
        return {b.name: b.datapath_type for b in self._idl.tables["Bridge"].rows.values()}

    def bridge(self, name: str) -> tuple[str, list[OvsInterface]]:
        """(datapath_type, interfaces) of bridge `name`."""
        for b in self._idl.tables["Bridge"].rows.values():
            if b.name == name:
                out = []
                for port in b.ports:
                    for i in port.interfaces:
                        ofport = i.ofport[0] if i.ofport else None
                        out.append(
                            OvsInterface(
                                name=i.name,
                                type=i.type,
                                port=port.name,
                                ofport=ofport,
                                options=dict(i.options),
                                error=i.error[0] if i.error else None,
                                external_ids=dict(i.external_ids),
                            )
                        )
                return b.datapath_type, sorted(out, key=lambda x: x.name)
        known = ", ".join(sorted(self.bridges())) or "none"
        raise UserError(
            f"bridge {name!r} not found in OVSDB at {self.remote} " f"(bridges: {known})"
        )

    def close(self) -> None:
        self._idl.close()
