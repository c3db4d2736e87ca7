"""Install wheels into the image's venv from the build machine: natively, without byte-compiling.

    python3 image/lib/install_wheels.py ROOT VENV PYTHON_VERSION WHEEL...

pip in the image's root runs under qemu-user: creating the venv with pip and letting it install the
~30 wheels took 10 minutes there. The wheels were already resolved and downloaded for the image's
Python by pip on this machine, so they are unpacked here by pypa's ``installer`` into the venv's
scheme under ROOT (VENV is the venv's path in the image, e.g. /opt/appliance/venv; its console scripts
run its own python). The image's python3 byte-compiles them afterwards (image/lib/appliance-layer.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__.split("\n\n")[1])
    root, venv, python_version, *wheels = sys.argv[1:]
    site_packages = f"{venv}/lib/python{python_version}/site-packages"
    destination = SchemeDictionaryDestination(
        {"purelib": site_packages, "platlib": site_packages, "scripts": f"{venv}/bin", "data": venv,
         "headers": f"{venv}/include/site/python{python_version}"},
        interpreter=f"{venv}/bin/python", script_kind="posix", destdir=root)
    for wheel in wheels:
        with WheelFile.open(Path(wheel)) as source:
            install(source, destination, additional_metadata={"INSTALLER": b"appliance image build\n"})


if __name__ == "__main__":
    main()
