# The disk image from the finished root directory, with no loop device: a FAT32 bootfs (mtools) and
# an ext4 rootfs (mke2fs -d) placed into an MBR disk by sfdisk and dd, addressed by PARTUUID.
# shellcheck shell=bash

BOOT_MIB=256
BOOT_LABEL=BOOTFS
ALIGN_MIB=4

# cmdline.txt and fstab by PARTUUID; raspi-firmware regenerates cmdline.txt from ROOTPART on kernel
# updates, so it is told too.
layout_by_partuuid() {
    local disk_id="$1"
    local root_part="PARTUUID=$disk_id-02" boot_part="PARTUUID=$disk_id-01" config_gid
    # FAT has no owners: the mount gives every file root:appliance-config 0640 and every folder 0750, so
    # appliance.toml's passwords and keys are readable by root and the service only (by number: the
    # group is resolved here, not by mount at boot).
    config_gid=$(awk -F: '$1 == "appliance-config" {print $3}' "$ROOT/etc/group")
    [ -n "$config_gid" ] || die "no group appliance-config in the root's /etc/group (systemd/appliance.sysusers)"
    cat > "$ROOT/etc/fstab" <<FSTAB
# <file system>      <mount point>   <type>  <options>                          <dump> <pass>
$root_part  /               ext4    defaults,noatime,commit=30         0      1
$boot_part  /boot/firmware  vfat    defaults,noatime,uid=0,gid=$config_gid,fmask=0137,dmask=0027,flush  0      2
FSTAB
    if [ "$READ_ONLY_ROOT" = 1 ]; then
        echo "PARTUUID=$disk_id-03  /var/lib/appliance  ext4  defaults,noatime,commit=30  0  2" >> "$ROOT/etc/fstab"
    fi
    if [ -f "$ROOT/etc/default/raspi-firmware" ]; then
        sed -i -e '/^#\?ROOTPART=/d' "$ROOT/etc/default/raspi-firmware"
        echo "ROOTPART=$root_part" >> "$ROOT/etc/default/raspi-firmware"
    fi
    local cmdline="$ROOT/boot/firmware/cmdline.txt"
    if [ -f "$cmdline" ]; then
        sed -i -E "s#root=[^ ]+#root=$root_part#" "$cmdline"
    else
        echo "console=serial0,115200 console=tty1 root=$root_part rootfstype=ext4 fsck.repair=yes rootwait" > "$cmdline"
    fi
    grep -q "root=$root_part" "$cmdline" || die "could not set root=$root_part in cmdline.txt"
    # raspi-firmware appends this file to config.txt whenever it regenerates it (kernel updates); the
    # base's config.txt was generated before the appliance's settings existed.
    local custom="$ROOT/etc/default/raspi-firmware-custom" config="$ROOT/boot/firmware/config.txt"
    if [ -f "$custom" ] && [ -f "$config" ] && ! grep -qF "$(head -1 "$custom")" "$config"; then
        cat "$custom" >> "$config"
    fi
}

# assemble OUT.img: bootfs and rootfs into one disk image.
assemble() {
    local out="$1" disk_id="$2"
    local bootdir="$WORK/bootfs" boot_img="$WORK/boot.vfat" root_img="$WORK/root.ext4"
    rm -rf "$bootdir"; mkdir -p "$bootdir"
    cp -a "$ROOT/boot/firmware/." "$bootdir/"
    find "$ROOT/boot/firmware" -mindepth 1 -delete

    # FAT32 needs at least 65525 clusters: 256 MiB with 2 KiB clusters (mkfs.vfat picks them).
    rm -f "$boot_img"
    mkfs.vfat -F 32 -n "$BOOT_LABEL" -i "$disk_id" -C "$boot_img" $((BOOT_MIB * 1024)) >/dev/null
    mcopy -s -p -i "$boot_img" "$bootdir"/* ::/
    cp -a "$bootdir/." "$ROOT/boot/firmware/"   # put it back: the root dir stays whole for inspection

    # With a read-only root, the data dir goes to its own partition; the root keeps an empty mount point.
    DATA_DIR="$WORK/datafs"
    if [ "$READ_ONLY_ROOT" = 1 ] && [ ! -d "$DATA_DIR" ]; then
        mv "$ROOT/var/lib/appliance" "$DATA_DIR"
        mkdir "$ROOT/var/lib/appliance"
        chown --reference="$DATA_DIR" "$ROOT/var/lib/appliance"; chmod --reference="$DATA_DIR" "$ROOT/var/lib/appliance"
    fi

    # rootfs: what is used plus room for updates and the kept images until first boot grows it.
    local used_mib root_mib
    used_mib=$(du -sm --exclude=./boot/firmware "$ROOT" | cut -f1)
    root_mib=$(( (used_mib * 12 / 10 + 512 + ALIGN_MIB - 1) / ALIGN_MIB * ALIGN_MIB ))
    rm -f "$root_img"; truncate -s "${root_mib}M" "$root_img"
    local boot_tmp="$WORK/boot-firmware.hidden"
    mv "$ROOT/boot/firmware" "$boot_tmp"; mkdir "$ROOT/boot/firmware"
    mkfs.ext4 -q -L rootfs -d "$ROOT" -E lazy_itable_init=0,lazy_journal_init=0 "$root_img" ||
        { rmdir "$ROOT/boot/firmware"; mv "$boot_tmp" "$ROOT/boot/firmware"; die "mkfs.ext4 failed (see above)"; }
    rmdir "$ROOT/boot/firmware"; mv "$boot_tmp" "$ROOT/boot/firmware"

    # With a read-only root, /var/lib/appliance is a partition of its own: the last one, which first
    # boot grows to the card.
    local data_img="$WORK/data.ext4" data_mib=0
    if [ "$READ_ONLY_ROOT" = 1 ]; then
        local data_used
        data_used=$(du -sm "$DATA_DIR" | cut -f1)
        data_mib=$(( (data_used + 256 + ALIGN_MIB - 1) / ALIGN_MIB * ALIGN_MIB ))
        rm -f "$data_img"; truncate -s "${data_mib}M" "$data_img"
        mkfs.ext4 -q -L data -d "$DATA_DIR" "$data_img" || die "mkfs.ext4 of the data partition failed (see above)"
    fi

    local boot_start=$((ALIGN_MIB * 2048)) boot_sectors=$((BOOT_MIB * 2048))
    local root_start=$((boot_start + boot_sectors)) root_sectors=$((root_mib * 2048))
    local data_start=$((root_start + root_sectors)) data_sectors=$((data_mib * 2048))
    local total_sectors=$((data_start + data_sectors))
    rm -f "$out"
    truncate -s $((total_sectors * 512)) "$out"
    sfdisk --quiet "$out" <<TABLE
label: dos
label-id: 0x$disk_id
unit: sectors

start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
$([ "$data_mib" -gt 0 ] && echo "start=$data_start, size=$data_sectors, type=83")
TABLE
    dd if="$boot_img" of="$out" bs=1M seek=$((boot_start / 2048)) conv=notrunc,sparse status=none
    dd if="$root_img" of="$out" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
    [ "$data_mib" -gt 0 ] && dd if="$data_img" of="$out" bs=1M seek=$((data_start / 2048)) conv=notrunc,sparse status=none
    rm -f "$boot_img" "$root_img" "$data_img"
    say "disk image: $(human "$(stat -c %s "$out")") (bootfs ${BOOT_MIB} MiB, rootfs ${root_mib} MiB, ${used_mib} MiB used$([ "$data_mib" -gt 0 ] && echo ", data ${data_mib} MiB")), disk id $disk_id"
}
