import os

# tests/lab/guest runs inside the lab guest (tests/lab/test_lab.py boots it);
# on the host it is only collected for its test names.
collect_ignore = [] if os.environ.get("OVSLAT_IN_LAB") else ["guest"]
