# The raspios base: Raspberry Pi OS Lite arm64, downloaded once (sha256-pinned in image/raspios.env),
# grown, and customised through an offset loop mount and a chroot. Its own first boot still resizes
# the root partition and sets a new disk id; the appliance's first boot applies appliance.toml.
# shellcheck shell=bash source-path=SCRIPTDIR

RASPIOS_LOOP=""
RASPIOS_IMG=""
RASPIOS_GROW_MIB=1536

raspios_unmount() {
    if [ -n "${ROOT:-}" ] && mountpoint -q "$ROOT" 2>/dev/null; then umount "$ROOT" || umount -l "$ROOT"; fi
    if [ -n "$RASPIOS_LOOP" ]; then losetup -d "$RASPIOS_LOOP" 2>/dev/null || true; RASPIOS_LOOP=""; fi
    return 0
}

raspios_base() {
    # shellcheck source=../raspios.env
    . "$IMAGE_DIR/raspios.env"
    if [ -n "$RASPIOS_URL_GIVEN" ]; then
        RASPIOS_URL="$RASPIOS_URL_GIVEN"
        [ -n "$RASPIOS_SHA256_GIVEN" ] || die "--raspios-url needs --raspios-sha256: the build uses no image it cannot verify"
    fi
    local sha256="${RASPIOS_SHA256_GIVEN:-$RASPIOS_SHA256}"
    local xz
    xz="$CACHE_DIR/$(basename "$RASPIOS_URL")"
    fetch_verified "$RASPIOS_URL" "$sha256" "$xz"
    RASPIOS_IMG="$WORK/raspios.img"
    say "unpacking $(basename "$xz")"
    xz -dc -T0 "$xz" > "$RASPIOS_IMG"
    local parts
    parts=$(sfdisk --json "$RASPIOS_IMG" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["partitiontable"]["partitions"]))' 2>/dev/null || echo 0)
    [ "$parts" = 2 ] || die "$(basename "$xz") is not a Raspberry Pi OS image (no partition table with a boot and a root partition)"
    # Room for the appliance layer; sfdisk -N keeps the disk id, so the PARTUUIDs stay valid.
    truncate -s +"${RASPIOS_GROW_MIB}M" "$RASPIOS_IMG"
    echo ", +" | sfdisk --quiet -N 2 "$RASPIOS_IMG"
    local start size
    start=$(partition_field "$RASPIOS_IMG" 2 start); size=$(partition_field "$RASPIOS_IMG" 2 size)
    RASPIOS_LOOP=$(losetup --find --show -o $((start * 512)) --sizelimit $((size * 512)) "$RASPIOS_IMG")
    e2fsck -fy "$RASPIOS_LOOP" >/dev/null || true
    resize2fs "$RASPIOS_LOOP" >/dev/null
    mount "$RASPIOS_LOOP" "$ROOT"
    raspios_prepare
}

# Raspberry Pi OS specifics before the shared layer: the OS packages the appliance uses, and no
# interactive first-user wizard (the appliance makes its own admin user).
raspios_prepare() {
    chroot_mounts
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf.appliance-build" 2>/dev/null || true
    mount --bind /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    in_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --no-install-recommends \
        python3-venv python3-picamera2 python3-lgpio polkitd avahi-daemon libnss-mdns exfatprogs cloud-guest-utils >/dev/null
    in_root apt-get clean
    umount "$ROOT/etc/resolv.conf" 2>/dev/null || true
    rm -f "$ROOT/etc/resolv.conf.appliance-build"
    in_root systemctl disable userconfig.service >/dev/null 2>&1 || true
    in_root systemctl enable getty@tty1.service >/dev/null 2>&1 || true
    chroot_unmounts
}

# raspios_finish OUT.img: the boot partition's files go in with mtools; the image keeps its layout.
raspios_finish() {
    local out="$1"
    local start
    start=$(partition_field "$RASPIOS_IMG" 1 start)
    mcopy -o -i "$RASPIOS_IMG@@$((start * 512))" "$ROOT/boot/firmware/appliance.toml" ::/appliance.toml
    rm -f "$ROOT/boot/firmware/appliance.toml"
    sync
    raspios_unmount
    e2fsck -fy -E discard "$RASPIOS_IMG" >/dev/null 2>&1 || true
    mv "$RASPIOS_IMG" "$out"
}
