#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build the camera's flashable SD card image.
#
#   image/build.sh [--base raspios|debian] [options]
#
# Output: deploy/<name>-<version>.img.xz, its .sha256, a .bmap when bmaptool is installed, and
# deploy/<name>-<version>.build.log. Needs root (chroot, filesystems) and, on a non-arm64 machine,
# qemu-user-static. The base root filesystem is cached in ~/.cache/appliance-image, keyed by
# everything that goes into it, so a rebuild where only the appliance changed takes minutes.
#
# Options:
#   --base raspios|debian  raspios: Raspberry Pi OS Lite (default; downloads it, needs internet);
#                          debian: Debian arm64 built from Debian's mirror (Pi 3, 4, Zero 2 W; not Pi 5)
#   --config FILE          appliance.toml to start from (default: built-in defaults); every key is
#                          written to the boot partition with a comment
#   --models-from DIR      copy the model from DIR instead of downloading it (sha256-checked either way)
#   --replay DIR           put these photos in the image for the replay camera (demo and test images)
#   --coral                add the Coral Edge TPU runtime and the Edge TPU build of the default model
#   --raspios-url URL      another Raspberry Pi OS Lite arm64 .img.xz (give its --raspios-sha256 too)
#   --raspios-sha256 HEX   the Raspberry Pi OS image's sha256 (overrides image/raspios.env)
#   --coral-sha256 HEX     the Edge TPU runtime package's sha256 (image/coral.env pins none yet)
#   --name NAME            image name (default: appliance-<base>)
#   --deploy DIR           where the image goes (default: deploy/ in the repository)
#   --cache DIR            the cache (default: ${XDG_CACHE_HOME:-~/.cache}/appliance-image)
#   --read-only-root       the OS mounted read-only (overlayroot) after first boot; a data partition
#                          at /var/lib/appliance is all that is written (debian base)
#   --no-xz                leave the raw .img (quicker, for development)
#   --keep-work            keep the work directory (root tree and raw image) for inspection
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/lib/download.sh"
. "$IMAGE_DIR/lib/base-debian.sh"
. "$IMAGE_DIR/lib/base-raspios.sh"
. "$IMAGE_DIR/lib/debian-pypi.sh"
. "$IMAGE_DIR/lib/appliance-layer.sh"
. "$IMAGE_DIR/lib/assemble.sh"
. "$IMAGE_DIR/lib/coral.sh"

BASE=raspios CONFIG="" MODELS_FROM="" REPLAY_DIR="" CORAL=0 RASPIOS_URL_GIVEN="" RASPIOS_SHA256_GIVEN="" CORAL_SHA256_GIVEN="" NAME="" XZ=1 KEEP_WORK=0 READ_ONLY_ROOT=0
DEPLOY="$REPO/deploy"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/appliance-image"
HOSTNAME_DEFAULT=appliance

usage() { sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE="${2:?--base needs raspios or debian}"; shift 2 ;;
        --config) CONFIG="${2:?}"; shift 2 ;;
        --models-from) MODELS_FROM="${2:?}"; shift 2 ;;
        --replay) REPLAY_DIR="${2:?}"; shift 2 ;;
        --coral) CORAL=1; shift ;;
        --raspios-url) RASPIOS_URL_GIVEN="${2:?}"; shift 2 ;;
        --raspios-sha256) RASPIOS_SHA256_GIVEN="${2:?}"; shift 2 ;;
        --coral-sha256) CORAL_SHA256_GIVEN="${2:?}"; shift 2 ;;
        --name) NAME="${2:?}"; shift 2 ;;
        --deploy) DEPLOY="${2:?}"; shift 2 ;;
        --cache) CACHE_DIR="${2:?}"; shift 2 ;;
        --no-xz) XZ=0; shift ;;
        --read-only-root) READ_ONLY_ROOT=1; shift ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) usage 0 ;;
        *) warn "unknown option: $1"; usage ;;
    esac
done
case "$BASE" in raspios|debian) ;; *) die "--base must be raspios or debian, not '$BASE'" ;; esac
if [ "$CORAL" = 1 ]; then  # refused before anything is built, with the reason
    # shellcheck source=coral.env
    . "$IMAGE_DIR/coral.env"
    [ -n "$CORAL_SHA256_GIVEN$CORAL_DEB_SHA256" ] || die "$CORAL_REFUSED"
fi
[ "$READ_ONLY_ROOT" = 0 ] || [ "$BASE" = debian ] ||
    die "--read-only-root is built for --base debian only so far (it needs Debian's overlayroot, which the raspios base does not install)"
for path in "$CONFIG" "$MODELS_FROM" "$REPLAY_DIR"; do
    [ -z "$path" ] || [ -e "$path" ] || die "$path: no such file or directory"
done
[ -z "$CONFIG" ] || CONFIG=$(realpath "$CONFIG")
[ -z "$MODELS_FROM" ] || MODELS_FROM=$(realpath "$MODELS_FROM")
[ -z "$REPLAY_DIR" ] || REPLAY_DIR=$(realpath "$REPLAY_DIR")
NAME="${NAME:-appliance-$BASE}"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
    VERSION="$VERSION-g$(git -C "$REPO" rev-parse --short HEAD)"
    git -C "$REPO" diff --quiet HEAD 2>/dev/null || VERSION="$VERSION-dirty"
fi
STEM="$NAME-$VERSION"

prerequisites() {
    need_root "image/build.sh"
    local cmds=(sfdisk:fdisk mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools xz:xz-utils python3:python3
                chroot:coreutils systemctl:systemd numfmt:coreutils git:git)
    [ "$(uname -m)" = aarch64 ] || cmds+=(qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support)
    # (the cross compiler builds the camera stack's C extensions when it comes from PyPI: see debian-pypi.sh)
    cmds+=(aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/include/stdio.h:libc6-dev-arm64-cross swig:swig)
    [ "$BASE" = debian ] && cmds+=(mmdebstrap:mmdebstrap)
    [ "$BASE" = raspios ] && cmds+=(curl:curl losetup:mount mount:mount tar:tar)
    need "${cmds[@]}"
    python3 -c 'import venv, ensurepip' 2>/dev/null || die "missing prerequisites; install them with:
    apt-get install --no-install-recommends python3-venv"
    ensure_binfmt
}

# Everything is written under the work dir, then moved into deploy/ only when complete: an error, a
# full disk or Ctrl-C leaves no half-written image there.
WORK="" ROOT="" TEE_PID=""
cleanup() {
    local status=$?
    chroot_unmounts
    raspios_unmount
    if [ -n "$WORK" ] && [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"; fi
    rm -rf "$DEPLOY/.partial-$$"
    [ -n "${TEE_PID:-}" ] || return $status   # stopped before the build began: the message said why
    if [ $status -ne 0 ]; then
        exec 1>&3 2>&4; wait "$TEE_PID" 2>/dev/null || true
        local kept_log="$DEPLOY/$STEM.failed.log"
        mv -f "$LOG" "$kept_log" 2>/dev/null || kept_log="$LOG"
        printf '\033[1;31mbuild failed\033[0m (exit %s); no image was written to %s. Log: %s\n' \
            "$status" "$DEPLOY" "$kept_log" >&2
    else
        rm -f "$LOG"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# enough_space DIR MIB WHAT: stop before a stage that would fill the disk.
enough_space() {
    local avail_mib
    avail_mib=$(( $(stat -f -c '%a * %S' "$1") / 1048576 ))
    [ "$avail_mib" -ge "$2" ] ||
        die "not enough free space in $1 for $3: $avail_mib MiB free, about $2 MiB needed (free some, or use --deploy/--cache on a bigger disk)"
}

mkdir -p "$DEPLOY" "$CACHE_DIR" || die "cannot create $DEPLOY or $CACHE_DIR"
LOG=$(mktemp --suffix=.log "${TMPDIR:-/tmp}/appliance-build.XXXXXX")
exec 3>&1 4>&2
exec > >(tee "$LOG") 2>&1
TEE_PID=$!
say "building $STEM from the $BASE base ($(date -u +%FT%TZ))"
BUILD_START=$SECONDS

stage prerequisites prerequisites
# Space first, so a full disk stops the build now rather than after twenty minutes.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/appliance-image.XXXXXX")
enough_space "$WORK" 4096 "the root tree and the raw image (the work dir; set TMPDIR to move it)"
enough_space "$CACHE_DIR" 1024 "the cached base root filesystem (--cache)"
enough_space "$DEPLOY" "$([ "$XZ" = 1 ] && echo 600 || echo 2600)" "the finished image (--deploy)"
mkdir -p "$DEPLOY/.partial-$$"
ROOT="$WORK/root"
mkdir -p "$ROOT"

base_debian_unpack() {
    local tar
    tar="$CACHE_DIR/debian-$(debian_base_key).tar"
    stage base debian_base "$tar"
    tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$tar"
}
case "$BASE" in
    debian) stage unpack base_debian_unpack ;;
    raspios) stage base raspios_base ;;
esac
stage appliance appliance_layer
[ "$CORAL" = 1 ] && stage coral coral_layer

RAW="$WORK/$STEM.img"
if [ "$BASE" = debian ]; then
    DISK_ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
else  # Raspberry Pi OS's own disk id and boot partition size, pi-gen's label
    DISK_ID=$RASPIOS_DISK_ID BOOT_MIB=$RASPIOS_BOOT_MIB BOOT_LABEL=bootfs
fi
stage layout layout_by_partuuid "$DISK_ID"
stage assemble assemble "$RAW" "$DISK_ID"

OUT="$DEPLOY/.partial-$$"
compress() {
    local size_mib=$(( $(stat -c %s "$RAW") / 1048576 ))
    if [ "$XZ" = 1 ]; then
        enough_space "$OUT" $((size_mib / 3)) "the compressed image"
        xz -6 -T0 --stdout "$RAW" > "$OUT/$STEM.img.xz"
        (cd "$OUT" && sha256sum "$STEM.img.xz" > "$STEM.img.xz.sha256")
    else
        enough_space "$OUT" "$size_mib" "the raw image"
        cp --sparse=always "$RAW" "$OUT/$STEM.img"
        (cd "$OUT" && sha256sum "$STEM.img" > "$STEM.img.sha256")
    fi
    if command -v bmaptool >/dev/null; then
        bmaptool create -o "$OUT/$STEM.bmap" "$RAW" 2>/dev/null || warn "bmaptool create failed; no .bmap"
    fi
}
stage compress compress

stage_summary
say "built in $((SECONDS - BUILD_START)) s"
exec 1>&3 2>&4  # stop writing the log before it moves
wait "$TEE_PID" 2>/dev/null || true
install -m 644 "$LOG" "$OUT/$STEM.build.log"
# The image moves last: whoever sees it finds its checksum, bmap and log already there.
for f in "$OUT"/*; do case "$f" in *.img|*.img.xz) ;; *) mv -f "$f" "$DEPLOY/" ;; esac; done
for f in "$OUT"/*; do mv -f "$f" "$DEPLOY/"; done
rmdir "$OUT"
ls -l "$DEPLOY/$STEM".* >&2
