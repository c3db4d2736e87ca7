# --coral: the Edge TPU runtime (pinned in image/coral.env) and its USB udev rule. The Edge TPU build of
# the default model is fetched by the appliance layer (models fetch --edgetpu). The appliance detects
# the accelerator at start-up and falls back to the CPU when it is absent (model.accelerator = auto).
# shellcheck shell=bash source-path=SCRIPTDIR

coral_layer() {
    # shellcheck source=../coral.env
    . "$IMAGE_DIR/coral.env"
    local sha256="${CORAL_SHA256_GIVEN:-$CORAL_DEB_SHA256}"
    local deb
    deb="$CACHE_DIR/$(basename "$CORAL_DEB_URL")"
    fetch_verified "$CORAL_DEB_URL" "$sha256" "$deb"
    cp "$deb" "$ROOT/tmp/libedgetpu.deb"
    chroot_mounts
    in_root dpkg -i /tmp/libedgetpu.deb ||
        die "libedgetpu did not install (its dependency libusb-1.0-0 must be in the base)"
    chroot_unmounts
    rm -f "$ROOT/tmp/libedgetpu.deb"
    # The runtime's package ships the udev rule giving the plugdev group the USB accelerator.
    in_root_groups_add plugdev
}

in_root_groups_add() {
    local group="$1"
    chroot "$ROOT" getent group "$group" >/dev/null || chroot "$ROOT" groupadd --system "$group"
    chroot "$ROOT" usermod -a -G "$group" appliance
}
