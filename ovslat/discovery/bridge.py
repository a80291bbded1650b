"""A bridge's measurable interfaces, from OVSDB (what is on the bridge) and
netlink (which kernel device receives for it), kept current while watching."""

from __future__ import annotations

from ovslat.discovery import netlink
from ovslat.discovery.ovsdb import Ovsdb
from ovslat.discovery.topology import ROLES, Bridge, classify
from ovslat.errors import UserError
from ovslat.model.snapshot import Interface


class BridgeSource:
    def __init__(
        self, bridge: str, db: str, only: set[str] | None = None, exclude: set[str] | None = None
    ):
        bad = (only or set()) - set(ROLES)
        if bad:
            raise UserError(f"unknown role {sorted(bad)[0]!r} for --only: use {', '.join(ROLES)}")
        self.name = bridge
        self.only, self.exclude = only, exclude
        self._db = Ovsdb(db)
        self._netns = netlink.netns_inode()
        self.current = self._resolve()

    def _resolve(self) -> Bridge:
        datapath, interfaces = self._db.bridge(self.name)
        return classify(self.name, datapath, interfaces, netlink.links())

    def interfaces(self) -> list[Interface]:
        """Measurable members as Interfaces (slot assigned by the caller)."""
        out = []
        for m in self.current.measurable(self.only, self.exclude):
            # measurable: classify() found its kernel device and that device's link
            assert m.device is not None and m.link is not None
            out.append(
                Interface(
                    m.device, m.link.ifindex, self._netns, "", 0, m.link.rps, m.role, self.name
                )
            )
        return out

    def refresh(self) -> bool:
        """Pick up OVSDB changes (and kernel devices that appeared since);
        True when the measurable set may have changed."""
        changed = self._db.poll()
        pending = any(not m.measurable and m.device for m in self.current.members)
        if not (changed or pending):
            return False
        try:
            self.current = self._resolve()
        except UserError:  # the bridge itself was deleted: keep measuring what is left
            return False
        return True

    def close(self) -> None:
        self._db.close()


def check_measurable(src: BridgeSource) -> None:
    if not src.interfaces():
        reasons = "; ".join(f"{m.name}: {m.reason or 'excluded'}" for m in src.current.members)
        raise UserError(
            f"bridge {src.name} has nothing measurable"
            + (f" ({reasons})" if reasons else " (no ports)")
        )
