# The raspios base: Raspberry Pi OS Lite arm64, downloaded once (sha256-pinned in image/raspios.env).
# Its two partitions are unpacked into the root directory (the root through a read-only loop mount,
# the boot partition with mtools: this machine's kernel may have no vfat), upgraded in a chroot with
# the boot files at /boot/firmware, given the appliance layer like the Debian base, and assembled
# again the way pi-gen lays a card out: the image's disk id (so its PARTUUIDs), a FAT32 `bootfs` of
# the size it had, an ext4 `rootfs`. The appliance's first boot grows the root partition and applies
# appliance.toml; Raspberry Pi OS's own first-boot steps that would do the same are switched off.
# shellcheck shell=bash source-path=SCRIPTDIR

RASPIOS_LOOP="" RASPIOS_MNT=""
RASPIOS_DISK_ID="" RASPIOS_BOOT_MIB=""
# Whether the camera stack comes from the OS's archive (Raspberry Pi's has python3-picamera2 and
# python3-lgpio) or, as on the Debian base, from PyPI: set by raspios_prepare from what apt offers.
CAMERA_FROM_PYPI=1

raspios_unmount() {
    if [ -n "$RASPIOS_MNT" ] && mountpoint -q "$RASPIOS_MNT" 2>/dev/null; then umount "$RASPIOS_MNT" || umount -l "$RASPIOS_MNT"; fi
    if [ -n "$RASPIOS_LOOP" ]; then losetup -d "$RASPIOS_LOOP" 2>/dev/null || true; RASPIOS_LOOP=""; fi
    if [ -n "${ROOT:-}" ] && mountpoint -q "$ROOT/boot/firmware" 2>/dev/null; then umount -l "$ROOT/boot/firmware"; fi
    return 0
}

# raspios_source: the URL and sha256 to build from: --raspios-url/--raspios-sha256, or the pin.
raspios_source() {
    # shellcheck source=../raspios.env
    . "$IMAGE_DIR/raspios.env"
    if [ -n "$RASPIOS_URL_GIVEN" ]; then
        RASPIOS_URL="$RASPIOS_URL_GIVEN"
        [ -n "$RASPIOS_SHA256_GIVEN" ] || die "--raspios-url needs --raspios-sha256: the build uses no image it cannot verify"
    fi
    RASPIOS_SHA256="${RASPIOS_SHA256_GIVEN:-$RASPIOS_SHA256}"
    [ -n "$RASPIOS_SHA256" ] || die "image/raspios.env pins no sha256 for $RASPIOS_URL, so it cannot be verified: pass --raspios-url URL --raspios-sha256 HEX (the sha256 Raspberry Pi publishes beside the image, URL.sha256)"
}

raspios_base() {
    raspios_source
    local xz img="$WORK/raspios.img"
    xz="$CACHE_DIR/$(basename "$RASPIOS_URL")"
    fetch_verified "$RASPIOS_URL" "$RASPIOS_SHA256" "$xz"
    say "unpacking $(basename "$xz")"
    xz -dc -T0 "$xz" > "$img" || die "$(basename "$xz") does not unpack (xz); delete it from $CACHE_DIR"
    local table
    table=$(sfdisk --json "$img" 2>/dev/null || true)
    python3 -c 'import json, sys
parts = json.loads(sys.argv[1] or "{}").get("partitiontable", {}).get("partitions", [])
sys.exit(not (len(parts) == 2 and parts[0]["type"] in ("b", "c") and parts[1]["type"] == "83"))' "$table" ||
        die "$(basename "$xz") is not a Raspberry Pi OS image (no MBR with a FAT boot partition and a Linux root partition)"
    RASPIOS_DISK_ID=$(sfdisk --disk-id "$img" | sed 's/^0x//')
    RASPIOS_BOOT_MIB=$(( $(partition_field "$img" 1 size) / 2048 ))

    # The root, as it is (owners, modes, xattrs, hard links), from a read-only mount.
    RASPIOS_MNT="$WORK/raspios-rootfs"
    mkdir -p "$RASPIOS_MNT"
    RASPIOS_LOOP=$(loop_partition "$img" 2)
    mount -o ro "$RASPIOS_LOOP" "$RASPIOS_MNT" || die "cannot mount the root partition of $(basename "$xz")"
    tar -C "$RASPIOS_MNT" --numeric-owner --xattrs --xattrs-include='*' -cf - . |
        tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf -
    raspios_unmount
    # The boot partition's files (FAT: no owners or modes to keep).
    mkdir -p "$ROOT/boot/firmware"
    mcopy -s -p -n -i "$img@@$(( $(partition_field "$img" 1 start) * 512 ))" '::/*' "$ROOT/boot/firmware/" ||
        die "cannot read the boot partition of $(basename "$xz")"
    rm -f "$img"
    say "Raspberry Pi OS: disk id $RASPIOS_DISK_ID, bootfs $RASPIOS_BOOT_MIB MiB, $(du -sm "$ROOT" | cut -f1) MiB"
    raspios_prepare
}

# Raspberry Pi OS specifics before the shared layer: a full upgrade (kernel, firmware and the camera
# stack move together), the OS packages the appliance uses, and its first-boot steps that the
# appliance replaces.
raspios_prepare() {
    chroot_mounts
    # The boot files are a mount point, as on the Pi: the kernel and firmware packages write there.
    mount --bind "$ROOT/boot/firmware" "$ROOT/boot/firmware"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf.appliance-build" 2>/dev/null || true
    mount --bind /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    local apt=(apt-get -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
               -o Dpkg::Options::=--force-unsafe-io)
    in_root apt-get update -qq || die "apt-get update failed in the Raspberry Pi OS root (see above)"
    say "apt-get full-upgrade (kernel, firmware and the camera stack together)"
    in_root "${apt[@]}" full-upgrade >/dev/null ||
        die "apt-get full-upgrade failed in the Raspberry Pi OS root (see above)"
    local packages=(python3-venv polkitd avahi-daemon libnss-mdns exfatprogs cloud-guest-utils network-manager
                    dnsmasq-base iw)
    if in_root apt-cache show python3-picamera2 >/dev/null 2>&1; then
        CAMERA_FROM_PYPI=0
        packages+=(python3-picamera2 python3-lgpio)
    else  # not Raspberry Pi's archive (the stand-in): the Debian base's way, libcamera from the OS
        packages+=(python3-libcamera libcamera-ipa python3-numpy python3-pil python3-prctl python3-piexif)
    fi
    in_root "${apt[@]}" install --no-install-recommends "${packages[@]}" >/dev/null ||
        die "could not install ${packages[*]} in the Raspberry Pi OS root (see above)"
    in_root apt-get clean
    umount "$ROOT/etc/resolv.conf" 2>/dev/null || true
    rm -f "$ROOT/etc/resolv.conf.appliance-build"
    umount "$ROOT/boot/firmware"
    chroot_unmounts
    raspios_first_boot_off
}

# What Raspberry Pi OS does at its first boot, the appliance does from appliance.toml: each is
# switched off here, so that one file decides (the README says so about Raspberry Pi Imager's
# customisation, which reaches the card through cloud-init).
raspios_first_boot_off() {
    # The first-user wizard (userconf-pi) and what it leaves: the appliance makes its own admin user.
    systemctl --root="$ROOT" disable userconfig.service >/dev/null 2>&1 || true
    systemctl --root="$ROOT" enable getty@tty1.service >/dev/null 2>&1 || true
    rm -rf "$ROOT/etc/ssh/sshd_config.d/rename_user.conf" "$ROOT/var/lib/userconf-pi"
    if awk -F: '$1 == "pi" && $2 ~ /^[!*]/ {found=1} END {exit !found}' "$ROOT/etc/shadow" 2>/dev/null; then
        in_root userdel --remove pi 2>/dev/null || in_root userdel pi
        rm -f "$ROOT/etc/sudoers.d/010_pi-nopasswd"
    fi
    # cloud-init (Trixie's way of applying Imager's settings): off, by its own documented switch.
    if [ -d "$ROOT/etc/cloud" ]; then
        : > "$ROOT/etc/cloud/cloud-init.disabled"
        rm -f "$ROOT/boot/firmware/user-data" "$ROOT/boot/firmware/meta-data" "$ROOT/boot/firmware/network-config"
    fi
    # rpi-resize: the appliance's first boot grows the last partition itself.
    systemctl --root="$ROOT" disable rpi-resize.service >/dev/null 2>&1 || true
    local cmdline="$ROOT/boot/firmware/cmdline.txt"
    [ -f "$cmdline" ] || die "the Raspberry Pi OS image has no cmdline.txt on its boot partition"
    sed -i -E -e 's/(^| )resize( |$)/\1\2/' -e 's#(^| )init=/usr/lib/raspberrypi-sys-mods/firstboot( |$)#\1\2#' \
        -e 's/  +/ /g' -e 's/ $//' "$cmdline"
}
