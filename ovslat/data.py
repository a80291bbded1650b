"""Where ovslat's own files are: the BPF sources it compiles at start and
the shipped scenarios. A wheel or the .deb installs them as package data
(ovslat/bpf, ovslat/scenarios: pyproject maps the repository's bpf/ and
scenarios/ there); a checkout reads the repository's directories."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    packaged = resources.files("ovslat") / name
    if packaged.is_dir():  # installed: read through the package's resources
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / name  # a checkout


def shipped_scenario(name: str) -> Path | None:
    """A scenario shipped with ovslat, by file name (`demo.yaml`) or stem."""
    d = data_dir("scenarios")
    for candidate in (d / name, d / f"{name}.yaml"):
        if candidate.is_file() and candidate.parent == d:
            return candidate
    return None
