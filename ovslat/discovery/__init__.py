"""What to measure: a bridge's ports from OVSDB (ovsdb.py, the only python-ovs
user), the kernel's links from netlink (netlink.py, the only pyroute2 user),
the pure classifier between them (topology.py) and the followed bridge
(bridge.py). Reading another namespace's links needs root."""

# Where Open vSwitch puts its database socket on Debian, Ubuntu and RHEL.
DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
