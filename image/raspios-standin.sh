#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build (once; cached) a stand-in for Raspberry Pi OS Lite arm64: this machine cannot download the
# real one, so the raspios base is tested on an image of the same shape wherever the appliance's
# build and first boot touch it, made from the cached Debian trixie base:
#
#   * pi-gen's card: MBR, a 512 MiB FAT32 `bootfs` at 8 MiB, an ext4 `rootfs`, both by PARTUUID in
#     cmdline.txt (pi-gen's, with `resize`) and fstab (pi-gen's), a config.txt like pi-gen's;
#   * NetworkManager enabled, no systemd-resolved; Wi-Fi blocked (rfkill state files, and
#     NetworkManager.state WirelessEnabled=false, as pi-gen leaves them without a Wi-Fi country);
#   * the first-user conventions of userconf-pi: a locked `pi` (uid 1000) with passwordless sudo, a
#     `userconfig.service` wizard enabled in place of getty@tty1, the SSH banner it leaves;
#   * cloud-init (Debian's) reading the boot partition's user-data, meta-data and network-config as
#     Trixie's images do, with a user-data like Raspberry Pi Imager's customisation writes;
#   * an `rpi-resize.service` enabled, as pi-gen enables it;
#   * the machine id "uninitialized", no SSH host keys.
#
# What differs, and why: Debian's kernel and raspi-firmware in place of Raspberry Pi's (theirs does
# not boot on QEMU's `virt` machine), Debian's apt sources (Raspberry Pi's archive is unreachable
# here, so the build takes picamera2 from PyPI, as for the Debian base), and the stand-in units
# above only record that they ran (in /var/lib/raspios-standin/), which the boot test checks.
#
#   image/raspios-standin.sh [--cache DIR]
#
# Prints the path of the .img.xz (its sha256 beside it, as <path>.sha256). Needs root.
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/lib/base-debian.sh"
. "$IMAGE_DIR/lib/appliance-layer.sh"
. "$IMAGE_DIR/lib/assemble.sh"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/appliance-image"
while [ $# -gt 0 ]; do
    case "$1" in
        --cache) CACHE_DIR="${2:?}"; shift 2 ;;
        -h|--help) sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
need_root "image/raspios-standin.sh"
need mmdebstrap:mmdebstrap mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs sfdisk:fdisk xz:xz-utils
ensure_binfmt

key=$( { cat "$0"; debian_base_key; } | sha256sum | cut -c1-16)
OUT="$CACHE_DIR/raspios-standin-$key.img.xz"
if [ -s "$OUT" ] && [ -s "$OUT.sha256" ]; then
    say "the Raspberry Pi OS stand-in from the cache: $OUT"
    echo "$OUT"; exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/raspios-standin.XXXXXX")
ROOT="$WORK/root"
cleanup() { chroot_unmounts; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$ROOT"
base_tar="$CACHE_DIR/debian-$(debian_base_key).tar"
debian_base "$base_tar"
say "the Raspberry Pi OS stand-in: unpacking the Debian base"
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base_tar"

say "the Raspberry Pi OS stand-in: cloud-init and the first user (arm64, emulated)"
chroot_mounts
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-unsafe-io cloud-init >/dev/null
in_root apt-get clean
in_root useradd --create-home --uid 1000 --shell /bin/bash --groups sudo,video pi
in_root passwd --lock pi >/dev/null
chroot_unmounts
: > "$ROOT/etc/resolv.conf"
echo 'pi ALL=(ALL) NOPASSWD: ALL' > "$ROOT/etc/sudoers.d/010_pi-nopasswd"
chmod 440 "$ROOT/etc/sudoers.d/010_pi-nopasswd"
install -d "$ROOT/etc/ssh/sshd_config.d"
echo 'Banner /usr/share/userconf-pi/sshd_banner' > "$ROOT/etc/ssh/sshd_config.d/rename_user.conf"

# Stand-ins for Raspberry Pi OS's own first-boot units: each records that it ran.
standin_unit() {  # standin_unit NAME DESCRIPTION [Unit] lines...
    local name="$1" description="$2"; shift 2
    {
        echo "[Unit]"
        echo "Description=$description (Raspberry Pi OS stand-in: records that it ran)"
        printf '%s\n' "$@"
        echo
        echo "[Service]"
        echo "Type=oneshot"
        echo "ExecStart=/bin/sh -c 'mkdir -p /var/lib/raspios-standin && date > /var/lib/raspios-standin/$name-ran'"
        echo
        echo "[Install]"
        echo "WantedBy=multi-user.target"
    } > "$ROOT/etc/systemd/system/$name.service"
    systemctl --root="$ROOT" enable "$name.service" >/dev/null 2>&1
}
standin_unit userconfig "User configuration wizard (userconf-pi)" "Before=getty@tty1.service"
standin_unit rpi-resize "Grow the root partition at first boot (raspberrypi-sys-mods)" "DefaultDependencies=no"
systemctl --root="$ROOT" disable getty@tty1.service >/dev/null 2>&1 || true
systemctl --root="$ROOT" enable NetworkManager.service >/dev/null 2>&1
[ ! -e "$ROOT/usr/lib/systemd/system/systemd-resolved.service" ] || die "the stand-in must not have systemd-resolved"

# Wi-Fi blocked until a country is set, as pi-gen leaves it.
install -d "$ROOT/var/lib/systemd/rfkill" "$ROOT/var/lib/NetworkManager"
for addr in 3f300000.mmcnr fe300000.mmcnr 1001100000.mmc; do echo 1 > "$ROOT/var/lib/systemd/rfkill/platform-$addr:wlan"; done
printf '[main]\nWirelessEnabled=false\n' > "$ROOT/var/lib/NetworkManager/NetworkManager.state"

# cloud-init as Trixie's images have it (NoCloud from the boot partition), and a user-data like the
# one Raspberry Pi Imager writes: if cloud-init ran, the hostname and a user would show it.
cat > "$ROOT/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg" <<'CFG'
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
CFG
cat > "$ROOT/boot/firmware/meta-data" <<'META'
dsmode: local
instance_id: rpios-image
META
cat > "$ROOT/boot/firmware/user-data" <<'USER'
#cloud-config
hostname: imager-customised
users:
  - name: imager
    groups: sudo
    shell: /bin/bash
    lock_passwd: true
USER
printf '# network-config (netplan v2), as Raspberry Pi OS ships it: all commented out\n' > "$ROOT/boot/firmware/network-config"

# pi-gen's hostname, machine id and boot files.
echo raspberrypi > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' > "$ROOT/etc/hosts"
echo uninitialized > "$ROOT/etc/machine-id"
rm -f "$ROOT"/etc/ssh/ssh_host_*
disk_id=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
cat > "$ROOT/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$disk_id-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$disk_id-02  /               ext4    defaults,noatime  0       1
FSTAB
echo "console=serial0,115200 console=tty1 root=PARTUUID=$disk_id-02 rootfstype=ext4 fsck.repair=yes rootwait resize" \
    > "$ROOT/boot/firmware/cmdline.txt"
cat > "$ROOT/boot/firmware/config.txt" <<'CONFIG'
# Like pi-gen's stage1 config.txt (http://rptl.io/configtxt)
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1
CONFIG

say "the Raspberry Pi OS stand-in: the card (pi-gen's layout), then xz"
BOOT_MIB=512 ALIGN_MIB=8 BOOT_LABEL=bootfs READ_ONLY_ROOT=0
assemble "$WORK/standin.img" "$disk_id"
xz -T0 -3 --stdout "$WORK/standin.img" > "$OUT.partial"
echo "$(sha256sum < "$OUT.partial" | cut -d' ' -f1)  $(basename "$OUT")" > "$OUT.sha256"
mv "$OUT.partial" "$OUT"
for old in "$CACHE_DIR"/raspios-standin-*.img.xz; do
    [ "$old" = "$OUT" ] || rm -f "$old" "$old.sha256"
done
say "the Raspberry Pi OS stand-in: $OUT ($(human "$(stat -c %s "$OUT")"))"
echo "$OUT"
