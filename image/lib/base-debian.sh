# The debian base: an arm64 Debian 13 (trixie) root filesystem with Raspberry Pi firmware and Debian's
# kernel, built by mmdebstrap and cached as a tarball keyed by everything that goes into it. libcamera
# comes from trixie-backports (0.7: trixie's own 0.4 virtual camera delivers empty buffers), pinned by
# image/debian/libcamera.pref, which stays in the image so that upgrades keep it there.
# shellcheck shell=bash

# Trixie only: the camera stack needs trixie-backports' libcamera and Python 3.13 (bookworm is not built).
DEBIAN_SUITE=trixie
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

debian_packages() { grep -v '^\s*\(#\|$\)' "$IMAGE_DIR/debian/packages.txt" | paste -sd, -; }

# The cache key: this script, the package list, suite, mirrors and mmdebstrap's version.
debian_base_key() {
    {
        cat "$IMAGE_DIR/lib/base-debian.sh" "$IMAGE_DIR/debian/packages.txt" "$IMAGE_DIR/debian/libcamera.pref"
        echo "$DEBIAN_SUITE $DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR"
        mmdebstrap --version
    } | sha256sum | cut -c1-16
}

# debian_base OUT_TAR: build the base unless the cache has it.
debian_base() {
    local out="$1"
    if [ -s "$out" ]; then
        say "base root filesystem from the cache: $out"
        return 0
    fi
    mkdir -p "$(dirname "$out")"
    local partial="$out.partial"
    rm -f "$partial"
    local components="main non-free-firmware"
    # update-initramfs is diverted while packages install (each kernel and firmware package would
    # rebuild the initramfs under emulation, ~7 min each) and run once at the end. dpkg runs under
    # eatmydata (no fsync per file; the tarball is written once at the end).
    mmdebstrap --arch=arm64 --variant=minbase --mode=root --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
        --include="$(debian_packages)" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --setup-hook='mkdir -p "$1/etc/apt/preferences.d"' \
        --setup-hook="upload $IMAGE_DIR/debian/libcamera.pref /etc/apt/preferences.d/libcamera.pref" \
        --essential-hook='mkdir -p "$1/boot/firmware"' \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
        --essential-hook='ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
        --customize-hook='rm "$1/usr/sbin/update-initramfs"' \
        --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
        --customize-hook='echo "COMPRESS=zstd" > "$1/etc/initramfs-tools/conf.d/compress"' \
        --customize-hook='chroot "$1" update-initramfs -c -k all' \
        --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"; : > "$1/etc/machine-id"' \
        --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
        "$DEBIAN_SUITE" "$partial" \
        "deb $DEBIAN_MIRROR $DEBIAN_SUITE $components" \
        "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates $components" \
        "deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security $components" \
        "deb $DEBIAN_MIRROR $DEBIAN_SUITE-backports $components"
    mv "$partial" "$out"
}
