"""Build an aarch64 CPython wheel of a package with a small C extension from its PyPI source, here.

    python3 image/lib/cross_wheel.py SDIST OUT_DIR --include DIR --ext-suffix SUFFIX --tag TAG

PyPI has no cp313 aarch64 wheel of pidng or lgpio. Building them in the image's root under qemu-user
(build-essential, python3-dev) took 20 minutes; Debian's cross compiler (aarch64-linux-gnu-gcc) on the
build machine, against the image Python's own headers (``--include``: a root holding Debian's
libpython3.X-dev for arm64), takes seconds. setuptools builds only for the Python that runs it, so
what each package's setup.py asks for is written out in RECIPES, and the wheel is packed here: the
package's Python files, the compiled extension named with the target's ``--ext-suffix`` (e.g.
``.cpython-313-aarch64-linux-gnu.so``) and a dist-info with ``--tag`` (e.g. ``cp313-cp313-linux_aarch64``).
"""

from __future__ import annotations

import argparse
import base64
import email.generator
import email.parser
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CC = "aarch64-linux-gnu-gcc"
# What setuptools passes on Debian's Python (sysconfig's CFLAGS and CCSHARED, LDSHARED), without -g.
CFLAGS = ["-O2", "-fwrapv", "-DNDEBUG", "-fPIC"]


@dataclass(frozen=True)
class Extension:
    name: str
    sources: tuple[str, ...]  # relative to the unpacked source; globs allowed
    cflags: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    extension: Extension
    package_dir: str = ""          # where the packages live (setup.py's package_dir {"": ...})
    packages: tuple[str, ...] = ()
    py_modules: tuple[str, ...] = ()
    swig: tuple[str, ...] = ()     # interface files to run through SWIG first (makes <name>_wrap.c and <name>.py)
    requires: tuple[str, ...] = ()


RECIPES = {
    # setup.py 4.0.9: Extension('ljpegCompress', [bitunpack.c, liblj92/lj92.c], extra_compile_args=['-std=gnu99'])
    "pidng": Recipe(
        extension=Extension("ljpegCompress", ("src/pidng/bitunpack.c", "src/pidng/liblj92/lj92.c"), ("-std=gnu99",)),
        package_dir="src", packages=("pidng",), requires=("numpy",)),
    # setup.py 0.2.2.0 with PYPI=1 (as PyPI's wheels are built): liblgpio linked in statically.
    "lgpio": Recipe(
        extension=Extension("_lgpio", ("src/lg*.c", "src/rgpiod.c", "lgpio_wrap.c"), ("-O3", "-pthread", "-Isrc"),
                            ("-lrt", "-ldl")),
        py_modules=("lgpio",), swig=("lgpio.i",)),
}


def record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def metadata(pkg_info: str, requires: tuple[str, ...]) -> str:
    message = email.parser.Parser().parsestr(pkg_info)
    if message["Metadata-Version"] in (None, "1.0", "1.1"):
        del message["Metadata-Version"]
        message["Metadata-Version"] = "2.1"
    present = message.get_all("Requires-Dist") or []
    for requirement in requires:
        if requirement not in present:
            message["Requires-Dist"] = requirement
    out = io.StringIO()
    email.generator.Generator(out, mangle_from_=False, maxheaderlen=0).flatten(message)
    return out.getvalue()


def build(sdist: Path, out_dir: Path, include: Path, ext_suffix: str, tag: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)
        (src,) = Path(tmp).iterdir()
        info = email.parser.Parser().parsestr((src / "PKG-INFO").read_text())
        name, version = info["Name"], info["Version"]
        recipe = RECIPES.get(name.lower())
        if recipe is None:
            sys.exit(f"{sdist.name}: no recipe for {name} (known: {', '.join(RECIPES)})")
        for interface in recipe.swig:
            subprocess.run(["swig", "-python", "-o", Path(interface).stem + "_wrap.c", interface], cwd=src, check=True)
        ext = recipe.extension
        sources = sorted(str(p.relative_to(src)) for pattern in ext.sources for p in src.glob(pattern))
        python_include = next(include.glob("usr/include/python3.*"))
        so = ext.name + ext_suffix
        # -idirafter: the Python headers' pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h> from
        # the same root, while the C library's headers stay the cross compiler's own.
        subprocess.run([CC, "-shared", *CFLAGS, *ext.cflags, f"-I{python_include}", "-idirafter", f"{include}/usr/include",
                        *sources, *ext.libs, "-o", so], cwd=src, check=True)

        files: dict[str, bytes] = {so: (src / so).read_bytes()}
        base = src / recipe.package_dir
        for package in recipe.packages:
            for path in sorted((base / package).rglob("*.py")):
                files[str(path.relative_to(base))] = path.read_bytes()
        for module in recipe.py_modules:
            files[f"{module}.py"] = (base / f"{module}.py").read_bytes()

        dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
        files[f"{dist_info}/METADATA"] = metadata((src / "PKG-INFO").read_text(), recipe.requires).encode()
        files[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: appliance image/lib/cross_wheel.py\n"
                                       f"Root-Is-Purelib: false\nTag: {tag}\n").encode()
        top_level = sorted({p.split("/")[0].split(".")[0] for p in files if not p.startswith(dist_info)})
        files[f"{dist_info}/top_level.txt"] = ("\n".join(top_level) + "\n").encode()
        record = [record_line(arcname, data) for arcname, data in files.items()] + [f"{dist_info}/RECORD,,"]

        out_dir.mkdir(parents=True, exist_ok=True)
        wheel = out_dir / f"{name.replace('-', '_')}-{version}-{tag}.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            for arcname, data in files.items():
                info_ = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info_.external_attr = 0o644 << 16
                zf.writestr(info_, data, zipfile.ZIP_DEFLATED)
            zf.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--include", type=Path, required=True,
                        help="a root holding the target's usr/include/python3.X (Debian's libpython3.X-dev, arm64)")
    parser.add_argument("--ext-suffix", required=True, help="the target Python's EXT_SUFFIX")
    parser.add_argument("--tag", required=True, help="the wheel's tag, e.g. cp313-cp313-linux_aarch64")
    args = parser.parse_args()
    print(build(args.sdist, args.out_dir, args.include, args.ext_suffix, args.tag))


if __name__ == "__main__":
    main()
