# The camera VM's root filesystem: a small Debian trixie amd64 system with libcamera 0.7 (trixie-backports),
# picamera2 from PyPI and the appliance's dependencies in a venv, booted by image/test-camera-vm.sh under
# QEMU (TCG) with a script as init. Built natively by mmdebstrap (no emulation) and cached as an ext4 image
# with its kernel and initrd, keyed by everything that goes into it.
# shellcheck shell=bash

CAMERA_VM_SUITE=trixie
CAMERA_VM_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Debian packages. libcamera from trixie-backports: trixie's own 0.4.0 virtual camera delivers empty
# buffers. picamera2's Debian-packaged imports are here; av, OpenEXR, jsonschema, tqdm and libarchive-c
# are not (video and IMX500 only; picamera2 imports av lazily).
CAMERA_VM_PACKAGES=(
    linux-image-amd64 initramfs-tools zstd kmod
    # the power-cut harness: device-mapper (dm-log-writes), the data partition's and a stick's filesystems
    dmsetup e2fsprogs dosfstools util-linux mount
    python3 python3-venv python3-numpy python3-pil python3-prctl python3-piexif python3-setuptools
    python3-libcamera/trixie-backports libcamera-ipa/trixie-backports libcamera-tools/trixie-backports
    libcamera-v4l2/trixie-backports  # libcamera-tools needs the same version
    # pidng has no cp313 wheel: its two C files are compiled here, then these are purged again
    gcc libc6-dev python3-dev
)
CAMERA_VM_BUILD_ONLY=(gcc libc6-dev python3-dev)

# From PyPI, pinned. picamera2 without its dependencies (PyPI's `kms` is an unrelated package, never
# installed; the adapter answers picamera2's `import pykms`).
CAMERA_VM_PICAMERA2=(picamera2==0.3.38 simplejpeg==1.9.0 videodev2==0.0.4)
CAMERA_VM_PIDNG=pidng==4.0.9
# pytest for the tests, hatchling to install the appliance from the tree at each run without a download.
CAMERA_VM_TOOLS=(pytest==9.2.0 hatchling==1.33.0)

# camera_vm_dependencies: the appliance's own dependencies, as pyproject.toml lists them today.
camera_vm_dependencies() {
    python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
        "$REPO/pyproject.toml" 2>/dev/null ||
        sed -n '/^dependencies = \[/,/^\]/{s/^ *"\(.*\)",$/\1/p}' "$REPO/pyproject.toml"
}

# The cache key: this file, the appliance's dependencies, the mirror and mmdebstrap's version.
camera_vm_key() {
    {
        cat "$IMAGE_DIR/lib/camera-vm.sh"
        camera_vm_dependencies
        echo "$CAMERA_VM_MIRROR"
        mmdebstrap --version
    } | sha256sum | cut -c1-16
}

# The init the kernel runs (no systemd): mount what a program expects, the run disk at /srv, then the
# run's own script from it. Whatever happens, the VM powers off (QEMU runs with -no-reboot).
CAMERA_VM_INIT='#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs -o size=1g tmpfs /tmp
hostname camera-vm
mount /dev/vdb /srv && [ -x /srv/in-vm.sh ] && /srv/in-vm.sh
echo "camera-vm: the run script exited with status $?"
sync
umount /srv 2>/dev/null
echo o > /proc/sysrq-trigger
# Nothing from the disk from here on: its device is going away (a page-in would fail and kill init).
while :; do :; done'

# camera_vm_pip ROOT ARGS...: pip in the root's venv, natively. The build machine's CA bundle goes in
# with it (PyPI may be reached through a proxy with its own CA); its pip config (local indexes) does not.
camera_vm_pip() {
    local root="$1"; shift
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
        PIP_DEFAULT_TIMEOUT=180 PIP_CERT=/tmp/build-ca.crt \
        /opt/venv/bin/pip install -q "$@"
}

# camera_vm_customize ROOT: the venv, the init, a small initrd; called by mmdebstrap as a hook.
camera_vm_customize() {
    local root="$1"
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/build-ca.crt"
    chroot "$root" python3 -m venv --system-site-packages /opt/venv
    local deps; mapfile -t deps < <(camera_vm_dependencies)
    camera_vm_pip "$root" "${deps[@]}" "${CAMERA_VM_TOOLS[@]}"
    # Last and without dependencies, so that pip neither installs nor complains about what is left out.
    camera_vm_pip "$root" --no-deps "${CAMERA_VM_PICAMERA2[@]}"
    camera_vm_pip "$root" --no-deps --no-build-isolation "$CAMERA_VM_PIDNG"
    rm -f "$root/tmp/build-ca.crt"
    chroot "$root" apt-get purge -y -qq "${CAMERA_VM_BUILD_ONLY[@]}" >/dev/null
    chroot "$root" apt-get autoremove --purge -y -qq >/dev/null
    printf '%s\n' "$CAMERA_VM_INIT" > "$root/sbin/camera-vm-init"
    chmod 755 "$root/sbin/camera-vm-init"
    mkdir -p "$root/srv"
    # No udev in the VM: the initrd loads the virtio disk's modules by name and devtmpfs makes the nodes.
    printf '%s\n' virtio_pci virtio_blk ext4 > "$root/etc/initramfs-tools/modules"
    printf 'MODULES=list\nCOMPRESS=zstd\n' > "$root/etc/initramfs-tools/conf.d/camera-vm"
    chroot "$root" update-initramfs -c -k all >/dev/null
    # What was installed, for whoever reads a failure.
    {
        chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' linux-image-amd64 python3 python3-libcamera \
            libcamera-ipa python3-numpy python3-pil
        chroot "$root" /opt/venv/bin/pip freeze --all 2>/dev/null
    } > "$root/etc/camera-vm-versions.txt"
}

# camera_vm_build OUT_DIR: OUT_DIR/{root.ext4,vmlinuz,initrd.img,versions.txt}, unless the cache has it.
camera_vm_build() {
    local out="$1"
    if [ -s "$out/root.ext4" ]; then
        return 0
    fi
    local partial="$out.partial" tree
    rm -rf "$partial"
    mkdir -p "$partial"
    tree="$partial/tree"
    local suite="$CAMERA_VM_SUITE" mirror="$CAMERA_VM_MIRROR"
    local includes; includes=$(printf '%s\n' "${CAMERA_VM_PACKAGES[@]}" | grep -v '^#' | paste -sd, -)
    # The hook runs as a program of its own (mmdebstrap runs snippets with sh): this file, sourced.
    printf '#!/bin/bash\nset -euo pipefail\nIMAGE_DIR=%q REPO=%q\n. "$IMAGE_DIR/lib/common.sh"\n. "$IMAGE_DIR/lib/camera-vm.sh"\ncamera_vm_customize "$1"\n' \
        "$IMAGE_DIR" "$REPO" > "$partial/customize"
    chmod 755 "$partial/customize"
    # update-initramfs is diverted while the packages install (the kernel's postinst would build a
    # full initrd) and run once, with the small module list, at the end.
    mmdebstrap --arch=amd64 --variant=minbase --mode=root --format=directory \
        --include="$includes" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
        --essential-hook='ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
        --customize-hook='rm "$1/usr/sbin/update-initramfs"' \
        --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
        --customize-hook="$partial/customize" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin; : > "$1/etc/machine-id"' \
        "$suite" "$tree" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $mirror $suite-backports main"
    local kernel initrd
    kernel=$(find "$tree/boot" -name 'vmlinuz-*' | sort -V | tail -1)
    initrd=$(find "$tree/boot" -name 'initrd.img-*' | sort -V | tail -1)
    [ -n "$kernel" ] && [ -n "$initrd" ] || die "the camera VM's root has no /boot/vmlinuz-* or initrd.img-*"
    cp "$kernel" "$partial/vmlinuz"
    cp "$initrd" "$partial/initrd.img"
    cp "$tree/etc/camera-vm-versions.txt" "$partial/versions.txt"
    local used_kib; used_kib=$(du -sk "$tree" | cut -f1)
    mke2fs -q -t ext4 -L camera-vm -d "$tree" "$partial/root.ext4" "$(( used_kib + 512 * 1024 ))K"
    rm -rf "$tree"
    mv "$partial" "$out"
}
