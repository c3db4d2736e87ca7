# What the debian base takes from PyPI beyond the appliance's own requirements, into the appliance's
# venv: picamera2 and the imports of it that Debian lacks, and lgpio. Debian trixie has libcamera
# (trixie-backports), numpy, Pillow, prctl and piexif (image/debian/packages.txt). Raspberry Pi OS
# brings its own python3-picamera2 and python3-lgpio: none of this runs there.
# shellcheck shell=bash

# picamera2 is downloaded without its declared dependencies: the others are Debian's, or are needed only
# for video recording and the IMX500 (av, OpenEXR, jsonschema, tqdm, libarchive-c: left out). It
# imports kms++ (`pykms`) unconditionally, which nobody packages: the appliance's adapter
# (appliance/cameras/picamera2_stack.py) answers that import.
PICAMERA2=picamera2==0.3.38
PYPI_WHEELS=(simplejpeg==1.9.0 videodev2==0.0.4)
# No cp313 aarch64 wheel on PyPI: built from source by a cross compiler (image/lib/cross_wheel.py).
# lgpio is gpiozero's pin factory on Debian's kernel (Debian has no python3-lgpio).
CROSS_BUILT=(pidng==4.0.9 lgpio==0.2.2.0)
# What the venv must import, checked at build time (appliance-layer.sh) and in the booted image.
# shellcheck disable=SC2034
DEBIAN_PYPI_IMPORTS="libcamera, simplejpeg, videodev2, pidng.core, ljpegCompress, piexif, prctl, lgpio"

# cross_built_wheels DIR: pidng and lgpio for the image's Python (PY_VERSION, from the image's root),
# cached by everything that goes into them.
cross_built_wheels() {
    local dir="$1" ext_suffix key cache
    ext_suffix=$(in_root python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    key=$( { cat "$IMAGE_DIR/lib/cross_wheel.py"; echo "${CROSS_BUILT[*]} $ext_suffix"
             aarch64-linux-gnu-gcc --version | head -1; swig -version | grep -i version; } | sha256sum | cut -c1-16)
    cache="$CACHE_DIR/cross-wheels-$key"
    if [ ! -d "$cache" ]; then
        local tmp="$WORK/cross" sdist
        rm -rf "$tmp"; mkdir -p "$tmp/sdist"
        # The target Python's headers: Debian's own libpython3.X-dev for arm64, unpacked, not installed.
        mmdebstrap --quiet --variant=extract --arch=arm64 --mode=root --include="libpython$PY_VERSION-dev" \
            "$DEBIAN_SUITE" "$tmp/include" "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" ||
            die "could not unpack libpython$PY_VERSION-dev (arm64) from $DEBIAN_MIRROR"
        "$CACHE_DIR/host-venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary=:all: \
            -d "$tmp/sdist" "${CROSS_BUILT[@]}" || die "could not download the sources of ${CROSS_BUILT[*]} from PyPI"
        for sdist in "$tmp"/sdist/*; do
            python3 "$IMAGE_DIR/lib/cross_wheel.py" "$sdist" "$tmp/wheels" --include "$tmp/include" \
                --ext-suffix "$ext_suffix" --tag "cp${PY_VERSION/./}-cp${PY_VERSION/./}-linux_aarch64" >/dev/null ||
                die "the cross build of $(basename "$sdist") failed (see above)"
        done
        mv "$tmp/wheels" "$cache"
        rm -rf "$tmp"
    fi
    cp "$cache"/*.whl "$dir/"
}

# debian_pypi_wheels DIR: picamera2, its PyPI-only imports, and the cross-built wheels.
debian_pypi_wheels() {
    local dir="$1"
    "$CACHE_DIR/host-venv/bin/pip" download -q --disable-pip-version-check "${PY_TAGS[@]}" -c "$OS_CONSTRAINTS" \
        -d "$dir" "${PYPI_WHEELS[@]}" ||
        die "could not download ${PYPI_WHEELS[*]} (aarch64, Python $PY_VERSION) from PyPI"
    "$CACHE_DIR/host-venv/bin/pip" download -q --disable-pip-version-check --no-deps "${PY_TAGS[@]}" \
        -d "$dir" "$PICAMERA2" || die "could not download $PICAMERA2 from PyPI"
    cross_built_wheels "$dir"
}
