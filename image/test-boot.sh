#!/usr/bin/env bash
# The boot test: build the debian-base image with a test config, boot it in QEMU (the image's own
# arm64 kernel and initrd), and check that the camera works as a user would find it.
#
#   image/test-boot.sh [--shared DIR] [--quick] [--bench-offload] [--raspios-standin]
#
# --raspios-standin: the raspios base instead, built by the real raspios path (image/build.sh --base
#   raspios --raspios-url … --raspios-sha256 …) from a stand-in for Raspberry Pi OS Lite served as
#   .img.xz on 127.0.0.1 (image/raspios-standin.sh: this machine cannot download the real one). Runs
#   the first boot's checks, and that Raspberry Pi OS's own first-boot steps (first-user wizard,
#   cloud-init with Imager-like settings, rpi-resize) stayed off; then Wi-Fi on two simulated radios
#   (mac80211_hwsim): the camera joins a test access point from appliance.toml, opens its hotspot
#   when that goes away, a phone joins it with the passphrase and loads the page, a wrong passphrase
#   is refused; then a clean poweroff and fsck.
# --quick (development): no xz (boots the raw image).
# --bench-offload: also run `appliance bench-offload` on the booted card (the kernel's own ext4, exFAT
#   and FAT32 drivers, emulated arm64), JSON into build/bench-offload-qemu.json.
#
# Asserts: first boot ran once (and not again at the second boot) and grew the root filesystem;
# appliance.service is active; the page answers through a port forward on 127.0.0.1; the loop kept
# exactly bird.bmp and parrot.jpg; USB sticks (ext4, exFAT, FAT32) plugged in are offloaded by udev
# and hold the two images byte for byte; a clean poweroff leaves filesystems that fsck passes; at the
# second boot, the camera stack imports, and camera.backend = "picamera2" on libcamera's virtual
# camera (serving the same photos) keeps exactly the frames of bird.bmp and parrot.jpg. Prints the
# build time (cold and cached), image size (raw and .xz) and boot-to-first-classification time.
# Needs root and takes a while: ~35 min from a cold cache, ~25 min with the base root filesystem cached.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
. "$IMAGE_DIR/lib/common.sh"

SHARED="$REPO/../shared"
QUICK=0 BENCH_OFFLOAD=0 STANDIN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --shared) SHARED="${2:?}"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --bench-offload) BENCH_OFFLOAD=1; shift ;;
        --raspios-standin) STANDIN=1; shift ;;
        -h|--help) sed -n '2,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
SHARED=$(realpath "$SHARED")
need_root "image/test-boot.sh (run sudo ./dev test, or ./dev quick for the test suite alone)"
need qemu-system-aarch64:qemu-system-arm qemu-img:qemu-utils ssh:openssh-client ssh-keygen:openssh-client \
     curl:curl mcopy:mtools e2fsck:e2fsprogs fsck.vfat:dosfstools mkfs.vfat:dosfstools losetup:mount \
     mkfs.exfat:exfatprogs mount.exfat-fuse:exfat-fuse
[ -d "$SHARED/images" ] && [ -d "$SHARED/models/coral" ] || die "$SHARED must hold images/ and models/coral/"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/appliance-image"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/appliance-boot-test.XXXXXX")
QEMU_PID="" LOOPS=() SERVER_PID=""
LOGS="$REPO/build/boot-test-logs"
# Every step is tried whatever failed before it or fails itself (QEMU already gone, a loop device
# already detached, no build log yet): the work dir (gigabytes) always goes, and the exit status stays
# the test's own.
cleanup() {
    local status=$?
    set +e
    [ -z "$QEMU_PID" ] || kill "$QEMU_PID" 2>/dev/null
    [ -z "${SERVER_PID:-}" ] || kill "$SERVER_PID" 2>/dev/null
    [ -z "${SUBSCRIBER_PID:-}" ] || kill "$SUBSCRIBER_PID" 2>/dev/null
    [ -z "${BROKER_PID:-}" ] || kill "$BROKER_PID" 2>/dev/null
    local d; for d in "$WORK"/stick-*/; do mountpoint -q "$d" && { umount "$d" || umount -l "$d"; }; done 2>/dev/null
    local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    # The consoles of every boot (and the build logs) outlive the work dir, for whoever reads a failure.
    mkdir -p "$LOGS" && rm -f "$LOGS"/* && cp "$WORK"/console-*.log "$WORK"/deploy/*.log "$LOGS/" 2>/dev/null
    rm -rf "$WORK"
    [ "$status" -eq 0 ] || echo "boot test failed; the consoles of its boots are in $LOGS" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
check() {  # check DESCRIPTION COMMAND...: one assertion, reported either way
    local what="$1"; shift
    if "$@"; then printf '  \033[32mok\033[0m    %s\n' "$what" >&2
    else printf '  \033[31mFAIL\033[0m  %s\n' "$what" >&2; failures=$((failures + 1)); fi
}

# --- build ------------------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N "" -C boot-test -f "$WORK/key"
PASSWORD="boot-test-$RANDOM$RANDOM"
{
    cat "$IMAGE_DIR/test/appliance.toml"
    echo "ssh_authorized_keys = \"$(cat "$WORK/key.pub")\""
    echo
    echo "[web]"
    echo "password = \"$PASSWORD\""
} > "$WORK/appliance.toml"

source "$IMAGE_DIR/lib/base-debian.sh"
source "$IMAGE_DIR/lib/debian-pypi.sh"
base_tar="$CACHE_DIR/debian-$(debian_base_key).tar"
build_kind=cached; [ -s "$base_tar" ] || build_kind=cold
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The stand-in for Raspberry Pi OS, served over HTTP on 127.0.0.1 as Raspberry Pi serves the real one.
base_args=(--base debian)
if [ "$STANDIN" = 1 ]; then
    say "the Raspberry Pi OS stand-in (image/raspios-standin.sh)"
    standin=$("$IMAGE_DIR/raspios-standin.sh" --cache "$CACHE_DIR")
    standin_port=$(free_port)
    mkdir "$WORK/served"
    ln -s "$standin" "$WORK/served/raspios-lite-standin.img.xz"
    python3 -m http.server -b 127.0.0.1 -d "$WORK/served" "$standin_port" >/dev/null 2>&1 &
    SERVER_PID=$!
    base_args=(--base raspios --raspios-url "http://127.0.0.1:$standin_port/raspios-lite-standin.img.xz"
               --raspios-sha256 "$(cut -d' ' -f1 "$standin.sha256")")
    rm -f "$CACHE_DIR/raspios-lite-standin.img.xz"  # so the build downloads it (verified), as it would the real one
    build_kind=standin
fi
# A broker on this machine that wants a password (QEMU's user network: the card reaches this machine's
# 127.0.0.1 at 10.0.2.2), and a subscriber: each keep's event must reach it from the booted image, sent
# by appliance-links.service, which reads the password from the boot partition's appliance.toml.
mqtt_port=$(free_port)
MQTT_PASSWORD="mqtt-$RANDOM$RANDOM"
mkdir "$WORK/broker"
mosquitto_passwd -c -b "$WORK/broker/passwords" camera "$MQTT_PASSWORD"
printf '%s\n' "user root" "listener $mqtt_port 127.0.0.1" "allow_anonymous false" \
    "password_file $WORK/broker/passwords" "log_dest file $WORK/broker/mosquitto.log" > "$WORK/broker/mosquitto.conf"
mosquitto -c "$WORK/broker/mosquitto.conf" 2>>"$WORK/broker/stderr.log" &
BROKER_PID=$!
# (mosquitto_sub: "Timed out" once it connected and waited 1 s for a message that never came)
broker_listens() { [ "$(mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -u camera -P "$MQTT_PASSWORD" -t probe -W 1 -C 1 2>&1)" = "Timed out" ]; }
i=0; until broker_listens; do i=$((i + 1)); [ $i -lt 50 ] || die "mosquitto did not start: $(cat "$WORK/broker/mosquitto.log")"; sleep 0.2; done
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -u camera -P "$MQTT_PASSWORD" -v -t appliance/appliance-test/events \
    -t appliance/appliance-test/available -t 'homeassistant/#' > "$WORK/mqtt.log" 2>&1 &
SUBSCRIBER_PID=$!
printf '\n[mqtt]\nurl = "mqtt://10.0.2.2:%s"\nusername = "camera"\npassword = "%s"\n' "$mqtt_port" "$MQTT_PASSWORD" \
    >> "$WORK/appliance.toml"
build() {
    [ "$QUICK" = 1 ] && set -- --no-xz "$@"
    "$IMAGE_DIR/build.sh" "${base_args[@]}" --config "$WORK/appliance.toml" --models-from "$SHARED/models/coral" \
        --replay "$SHARED/images" --name appliance-boot-test --deploy "$WORK/deploy" "$@"
}
start=$SECONDS
build
build_s=$((SECONDS - start))
img_xz=$(ls "$WORK"/deploy/appliance-boot-test-*.img.xz "$WORK"/deploy/appliance-boot-test-*.img 2>/dev/null | head -1 || true)
(cd "$WORK/deploy" && sha256sum --check --quiet "$(basename "$img_xz").sha256") || die "the image does not match its .sha256"
[ "$build_kind" = cold ] && echo "$build_s" > "$CACHE_DIR/last-cold-build-seconds"
compress_s=$(sed -n 's/.*\[compress\] done in \([0-9]*\) s.*/\1/p' "$WORK"/deploy/appliance-boot-test-*.build.log | tail -1)

# --- flash and boot ---------------------------------------------------------------------------
say "flashing: unpacking $(basename "$img_xz")"
case "$img_xz" in *.xz) xz -dc "$img_xz" > "$WORK/card.img" ;; *) mv "$img_xz" "$WORK/card.img" ;; esac
raw_bytes=$(stat -c %s "$WORK/card.img")
xz_bytes=$([ -f "$img_xz" ] && stat -c %s "$img_xz" || echo "")
# from_card IMG: the kernel, initrd and cmdline.txt from the card's boot partition (the Pi's consoles
# swapped for QEMU virt's serial port) into $WORK/vmlinuz, $WORK/initrd.img and $cmdline.
from_card() {
    local img="$1" offset files
    offset=$(( $(partition_field "$img" 1 start) * 512 ))
    files=$(mdir -b -i "$img@@$offset" ::/)
    kernel=$(grep -o 'vmlinuz-[^ ]*' <<<"$files" | sort -V | tail -1)
    initrd=$(grep -o 'initrd.img-[^ ]*' <<<"$files" | sort -V | tail -1)
    [ -n "$kernel" ] && [ -n "$initrd" ] || die "no vmlinuz-*/initrd.img-* on the boot partition of $img"
    mcopy -o -n -i "$img@@$offset" "::/$kernel" "$WORK/vmlinuz"
    mcopy -o -n -i "$img@@$offset" "::/$initrd" "$WORK/initrd.img"
    card_cmdline=$(mtype -i "$img@@$offset" ::/cmdline.txt)
    # Under emulation a module's signature check has taken minutes (a modprobe in ECDSA's vli_mmod_fast,
    # soft-locked for 22 s at a time), and the disks' device units gave up after systemd's 90 s: emergency
    # mode at the read-only root's second boot. The test waits longer for devices; a card on a Pi does not.
    cmdline="$(tr -s ' \n' ' ' <<<"$card_cmdline" | sed -E 's/console=[^ ]+ ?//g') console=ttyAMA0 panic=10"
    cmdline+=" systemd.default_device_timeout_sec=600"
    say "kernel $kernel, cmdline: $cmdline"
}
from_card "$WORK/card.img"
# An 8 GB card: first boot grows the root filesystem into it.
qemu-img create -q -f qcow2 -F raw -b "$WORK/card.img" "$WORK/card.qcow2" 8G

WEB_PORT=$(free_port); SSH_PORT=$(free_port)
boot() {  # boot NAME [QEMU ARG...]: the card in QEMU, its console in $WORK/console-NAME.log
    local name=$1; shift
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic -no-reboot \
        -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" -append "$cmdline" \
        -drive if=none,id=card,file="$WORK/card.qcow2",format=qcow2,cache=unsafe -device virtio-blk-pci,drive=card \
        -netdev "user,id=net,hostfwd=tcp:127.0.0.1:$WEB_PORT-:80,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
        -device virtio-net-pci,netdev=net,id=nic,romfile= \
        -device virtio-rng-pci -device qemu-xhci,id=xhci \
        -monitor "unix:$WORK/monitor.sock,server=on,wait=off" "$@" \
        > "$WORK/console-$name.log" 2>&1 < /dev/null &
    QEMU_PID=$!
    BOOT_NAME=$name
    BOOT_START=$SECONDS
}
on_card() {
    ssh -q -i "$WORK/key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=10 -o BatchMode=yes admin@127.0.0.1 "$@"
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local until=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        kill -0 "$QEMU_PID" 2>/dev/null || { tail -n 40 "$WORK"/console-*.log >&2; die "QEMU exited while waiting for $what"; }
        ! grep -qs 'Freezing execution' "$WORK/console-$BOOT_NAME.log" ||
            { tail -n 60 "$WORK/console-$BOOT_NAME.log" >&2; die "systemd froze during boot $BOOT_NAME (see its console above) while waiting for $what"; }
        ! grep -qs 'You are in emergency mode' "$WORK/console-$BOOT_NAME.log" ||
            { grep -E 'FAILED|DEPEND|TIME ' "$WORK/console-$BOOT_NAME.log" | tail -n 20 >&2
              die "boot $BOOT_NAME fell into emergency mode (the failed units above) while waiting for $what"; }
        [ $SECONDS -lt $until ] || { tail -n 60 "$WORK"/console-*.log >&2; die "timed out after ${limit}s waiting for $what"; }
        sleep 3
    done
}
# (socket-activated: the first request after a restart starts the page, which under emulation on a busy
# machine has taken longer than one attempt's 20 s: a timed-out request is tried again, twice)
api() { curl -fsS --max-time 20 --retry 2 --retry-delay 5 -u "admin:$PASSWORD" "http://127.0.0.1:$WEB_PORT$1"; }
frames() {  # frames KEY: the loop's frame counter KEY (seen, classified, kept) from the status API
    api /api/v1/status | python3 -c "import json,sys; l=json.load(sys.stdin)['loop'] or {}; print((l.get('frames') or {}).get('$1') or 0)"
}
classified() { [ "$(frames classified)" -gt 0 ]; }
full_pass() {  # every photo classified at least once: the loop has seen (files) + 1 frames
    local n; n=$(find "$SHARED/images" -maxdepth 1 -type f | wc -l)
    [ "$(frames classified)" -gt $((n + 1)) ]
}
monitor() {  # monitor COMMAND: one QEMU monitor command (hotplugging the USB stick)
    python3 - "$WORK/monitor.sock" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(1)
reply = s.recv(65536).decode(errors="replace")
if "Error" in reply or "error" in reply:
    sys.exit(f"QEMU monitor: {sys.argv[2]}: {reply}")
PY
}
offloads_finished() {  # how many offload units have finished so far (each stick starts one)
    # (journalctl says "Failed to add filter for units" while no unit matches yet)
    on_card sudo journalctl -u 'appliance-offload@*' --no-pager 2>/dev/null | grep -c "Deactivated successfully" || true
}
offload_done() {  # offload_done N: more than N offloads finished, and the last one says "done"
    # The unit is a oneshot that systemd unloads when it is done: its journal and the progress file
    # it leaves for the page say how it ended (`appliance offload` exits 0 only when complete).
    [ "$(offloads_finished)" -gt "$1" ] &&
        on_card cat /run/appliance/offload.json | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["state"] != "done")'
}
offloaded_sha256s() {  # the sha256 of every item the card has marked offloaded, sorted, one line
    on_card sudo appliance captures --data /var/lib/appliance/data --json |
        python3 -c 'import json,sys; print(" ".join(sorted(r["sha256"] for r in map(json.loads, sys.stdin) if r["offloaded_at"])))'
}
forget_offloads() {  # as if nothing had been offloaded yet, so the next stick gets every image
    on_card sudo -u appliance /opt/appliance/venv/bin/python - <<'PY'
import sqlite3
db = sqlite3.connect("/var/lib/appliance/data/appliance.db", timeout=30)
db.execute("update captures set offloaded_at = null")
db.commit()
PY
}
plug_stick() {  # plug_stick FSTYPE: a fresh 64 MB stick, hot-plugged; waits for its offload
    local fs=$1 before
    truncate -s 64M "$WORK/stick-$fs.img"
    case "$fs" in
        ext4) mkfs.ext4 -q -L STICK "$WORK/stick-$fs.img" ;;
        exfat) mkfs.exfat -L STICK "$WORK/stick-$fs.img" >/dev/null ;;
        vfat) mkfs.vfat -F 32 -n STICK "$WORK/stick-$fs.img" >/dev/null ;;
    esac
    before=$(offloads_finished)
    monitor "drive_add 0 if=none,id=stick-$fs,file=$WORK/stick-$fs.img,format=raw"
    monitor "device_add usb-storage,bus=xhci.0,drive=stick-$fs,id=stickdev-$fs"
    wait_for 300 "the offload onto the $fs stick to finish" offload_done "$before"
    on_card sudo journalctl -u 'appliance-offload@*' --no-pager | tail -3 >&2
    check "$fs stick: both kept images are marked offloaded" test "$(offloaded_sha256s | wc -w)" = 2
    monitor "device_del stickdev-$fs"
    sleep 3  # the card sees the stick go before the next one comes
}
stick_sha256s() {  # stick_sha256s FSTYPE: the stick, read on this machine: sha256 of every image under <hostname>/
    local fs=$1 img="$WORK/stick-$1.img" dir="$WORK/stick-$1" l
    mkdir -p "$dir"
    case "$fs" in
        ext4) mount -o ro,loop "$img" "$dir" ;;
        exfat) l=$(losetup -f --show -r "$img"); LOOPS+=("$l"); mount.exfat-fuse -o ro "$l" "$dir" >/dev/null ;;
        vfat) mcopy -s -n -i "$img" ::/appliance-test "$dir/" ;;  # this machine's kernel has no vfat driver
    esac
    find "$dir/appliance-test" -name '*.jpg' -exec sha256sum {} + | cut -d' ' -f1 | sort | tr '\n' ' ' | sed 's/ $//'
    ls "$dir"/appliance-test/manifest-*.csv "$dir"/appliance-test/manifest-*.jsonl >/dev/null || echo "(no manifests)"
    if [ "$fs" != vfat ]; then umount "$dir"; fi
    if [ "$fs" = exfat ]; then losetup -d "$l"; unset 'LOOPS[-1]'; fi
}
poweroff() {
    on_card sudo systemctl poweroff || true
    local until=$((SECONDS + 180))
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        [ $SECONDS -lt $until ] || die "the card did not power off within 180 s"
        sleep 2
    done
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=""
}
poweroff_and_fsck() {  # a clean poweroff, then fsck of the root (partition 2) and boot (1) filesystems; the card in $WORK/after.img
    say "clean poweroff, then fsck"
    poweroff
    qemu-img convert -O raw "$WORK/card.qcow2" "$WORK/after.img"
    rm -f "$WORK/card.qcow2"
    LOOPS+=("$(loop_partition "$WORK/after.img" 2)")
    check "fsck passes on the root filesystem after a clean poweroff" e2fsck -fn "${LOOPS[-1]}"
    LOOPS+=("$(loop_partition "$WORK/after.img" 1)")
    check "fsck passes on the boot partition after a clean poweroff" fsck.vfat -n "${LOOPS[-1]}"
    for l in "${LOOPS[@]}"; do losetup -d "$l"; done; LOOPS=()
}

say "first boot"
boot first
page_answers() { curl -fsS --max-time 20 "http://127.0.0.1:$WEB_PORT/" | grep -qi "<html"; }
wait_for 600 "the page to answer (through the port forward)" page_answers
page_answers_s=$((SECONDS - BOOT_START))
wait_for 600 "the first classification (the status API through the port forward)" classified
first_classification_s=$((SECONDS - BOOT_START))
wait_for 300 "SSH (first boot enables it for the key in appliance.toml)" on_card true
wait_for 600 "a full pass over the photos" full_pass

say "checks after the first boot"
check "appliance.service is active" test "$(on_card systemctl is-active appliance.service)" = active
check "appliance-web.socket is active" test "$(on_card systemctl is-active appliance-web.socket)" = active
check "the first-boot unit ran and succeeded" \
    test "$(on_card systemctl show -P Result appliance-firstboot.service)" = success
check "first boot wrote its record" on_card test -s /var/lib/appliance/first-boot.json
check "the docs are on the card beside the README (the config file points to them)" on_card test -s /opt/appliance/docs/configuration.md
check "first boot applied the hostname" test "$(on_card hostname)" = appliance-test
check "first boot applied the timezone" test "$(on_card readlink /etc/localtime)" = /usr/share/zoneinfo/Europe/Oslo
check "first boot grew the root filesystem to the card (> 6 GB)" \
    test "$(on_card findmnt -bno SIZE /)" -gt 6000000000
password_gone() { ! on_card sudo grep -q "$PASSWORD" /boot/firmware/appliance.toml; }
check "the web password's clear text left the boot partition" password_gone
# The config file's secrets (passwords, keys) are readable by root and the service only: the boot
# partition's files are root:appliance-config 0640, its folders 0750, and admin is not in that group.
check "appliance.toml is root:appliance-config 0640 in a folder of 0750" \
    test "$(on_card sudo stat -c "'%U:%G %a'" /boot/firmware/appliance.toml /boot/firmware | paste -sd' ')" = \
         "root:appliance-config 640 root:appliance-config 750"
check "... the service user may read it" on_card "sudo -u appliance head -c1 /boot/firmware/appliance.toml >/dev/null"
check "... the admin login may not" on_card "! cat /boot/firmware/appliance.toml 2>/dev/null"
sudo_said() { on_card "appliance config show 2>&1 || true" | grep -q "only root and the appliance service may read it; run the command with sudo"; }
check "... and appliance config show (the device's file) without sudo says to use sudo" sudo_said
check "... with sudo, appliance config check passes it" on_card sudo appliance config check /boot/firmware/appliance.toml
page=$(curl -fsS --max-time 20 "http://127.0.0.1:$WEB_PORT/" || true)
check "the review page answers through the port forward" grep -qi "<html" <<<"$page"
# One network stack: NetworkManager took the Ethernet by DHCP (QEMU's user network), wrote the resolver, and
# nothing else runs a DHCP client or a supplicant of its own.
# (eth0 on the Debian base, whose cmdline.txt has net.ifnames=0; enp0s2 on Raspberry Pi OS's shape)
check "NetworkManager brought the Ethernet up (connected)" grep -qx "ethernet:connected" <<<"$(on_card nmcli -t -f TYPE,STATE device)"
check "NetworkManager wrote /etc/resolv.conf (QEMU's DNS at 10.0.2.3)" on_card grep -qx "'nameserver 10.0.2.3'" /etc/resolv.conf
no_second_network_stack() {
    local units procs
    units=$(on_card systemctl list-units --state=active --no-legend "'systemd-networkd*'" "'systemd-resolved*'" \
        "'wpa_supplicant@*'" "'dhcpcd*'")
    procs=$(on_card ps -eo comm= | grep -xE 'dhclient|dhcpcd|udhcpc|systemd-network|systemd-resolve' || true)
    [ -z "$units$procs" ] || { echo "also running: $units $procs" >&2; return 1; }
}
check "no other DHCP client, resolver or supplicant unit runs" no_second_network_stack
# SSH only as appliance.toml says: systemd-ssh-generator is masked, so no sshd-vsock/sshd-unix-local socket.
no_generated_ssh() { [ -z "$(on_card systemctl list-units --all --no-legend "'sshd-*.socket'")" ]; }
check "no SSH socket generated beside ssh.service (systemd-ssh-generator masked)" no_generated_ssh
check "systemd-timesyncd keeps the time" test "$(on_card systemctl is-active systemd-timesyncd.service)" = active
kept=$(api "/api/v1/captures?limit=100" | python3 -c 'import json,sys; print(" ".join(sorted(i["source"] for i in json.load(sys.stdin)["items"])))' || echo "(the sync API did not answer)")
say "kept: $kept"
check "the loop kept exactly bird.bmp and parrot.jpg" test "$kept" = "bird.bmp parrot.jpg"
# The links: each keep's event at the broker on this machine, by its SHA-256; the device online (its
# last will's topic) and announced to Home Assistant (9 entities).
kept_by_sha256=$(api "/api/v1/captures?limit=100" | python3 -c 'import json,sys; print(" ".join(sorted(i["sha256"] for i in json.load(sys.stdin)["items"])))' || true)
events_by_sha256() {
    grep -a '^appliance/appliance-test/events ' "$WORK/mqtt.log" | cut -d' ' -f2- |
        python3 -c 'import json,sys; print(" ".join(sorted({json.loads(line)["sha256"] for line in sys.stdin})))'
}
events_arrived() { [ -n "$kept_by_sha256" ] && [ "$(events_by_sha256)" = "$kept_by_sha256" ]; }
wait_for 180 "each keep's MQTT event at the broker on this machine (appliance-links.service)" events_arrived
check "appliance-links.service is active" test "$(on_card systemctl is-active appliance-links.service)" = active
check "the broker has the camera online" grep -aqx 'appliance/appliance-test/available online' "$WORK/mqtt.log"
check "Home Assistant discovery announced the camera's 9 entities" \
    test "$(grep -a '^homeassistant/[a-z_]*/appliance-test/[a-z_]*/config ' "$WORK/mqtt.log" | cut -d' ' -f1 | sort -u | wc -l)" -eq 9
# Their labels identify them again when the virtual camera serves the same photos (second boot).
kept_labels=$(api "/api/v1/captures?limit=100" | python3 -c 'import json,sys; print("|".join(sorted(i["label"] for i in json.load(sys.stdin)["items"])))' || true)
no_traceback() { ! on_card sudo journalctl -b -u 'appliance*' | grep -q Traceback; }
check "the journal shows no Python traceback" no_traceback
record=$(on_card cat /var/lib/appliance/first-boot.json)

if [ "$STANDIN" = 1 ]; then
    say "checks of the raspios base (Raspberry Pi OS's first-boot steps stay off)"
    standin_ran() { on_card test -e "/var/lib/raspios-standin/$1-ran"; }
    not_ran() { ! standin_ran "$1"; }
    no_user() { ! on_card id "$1" >/dev/null 2>&1; }
    no_resize() { ! grep -qw resize <<<"$card_cmdline"; }
    check "the first-user wizard (userconfig.service) did not run" not_ran userconfig
    check "rpi-resize did not run (the appliance's first boot grew the root)" not_ran rpi-resize
    check "cmdline.txt names the root by the card's PARTUUID" \
        grep -qE "(^| )root=PARTUUID=$(sfdisk --disk-id "$WORK/card.img" | sed 's/^0x//')-02( |\$)" <<<"$card_cmdline"
    check "cmdline.txt has no 'resize' (Raspberry Pi OS's own first-boot resize)" no_resize
    check "cloud-init is disabled by its own switch" on_card test -e /etc/cloud/cloud-init.disabled
    check "cloud-init did not apply the Imager-like user-data (no user 'imager')" no_user imager
    check "the locked 'pi' user is gone" no_user pi
    check "... and its sudoers file" on_card test ! -e /etc/sudoers.d/010_pi-nopasswd
    check "the card keeps pi-gen's labels (bootfs, rootfs)" \
        test "$(on_card lsblk -no LABEL /dev/vda1 /dev/vda2 | paste -sd' ')" = "bootfs rootfs"

    # --- Wi-Fi on simulated radios ------------------------------------------------------------------
    # Two mac80211_hwsim radios: wlan0 is the camera's; wlan1, in a network namespace of its own, is
    # first a test access point, then a phone joining the camera's hotspot (image/test/hwsim.sh).
    say "Wi-Fi on simulated radios (mac80211_hwsim): join a network, lose it, the hotspot, a phone"
    on_card sudo install -m 755 /dev/stdin /var/tmp/hwsim.sh < "$IMAGE_DIR/test/hwsim.sh"
    check "two simulated radios, the second in a network namespace of its own" on_card sudo /var/tmp/hwsim.sh setup
    hotspot_pass="hotspot-$RANDOM$RANDOM"
    on_card "sudo sed -i -E -e 's/^wifi_country = .*/wifi_country = \"NO\"/' -e 's/^wifi_ssid = .*/wifi_ssid = \"TestNet\"/' \
        -e 's/^wifi_passphrase = .*/wifi_passphrase = \"test net passphrase\"/' \
        -e 's/^hotspot_passphrase = .*/hotspot_passphrase = \"$hotspot_pass\"/' \
        -e 's/^hotspot_after_s = .*/hotspot_after_s = 10.0/' /boot/firmware/appliance.toml"
    check "appliance.toml now names TestNet and a hotspot passphrase" \
        on_card "sudo grep -qx 'wifi_ssid = \"TestNet\"' /boot/firmware/appliance.toml && sudo grep -qx 'hotspot_after_s = 10.0' /boot/firmware/appliance.toml"
    on_card sudo systemctl restart appliance-system.service appliance-network.service
    # (only now: the radios stay blocked until the camera's settings unblock Wi-Fi, as on Raspberry Pi OS)
    check "a test access point (TestNet, WPA2) with DHCP on the second radio" \
        on_card sudo /var/tmp/hwsim.sh ap TestNet "'test net passphrase'"
    active_on() { on_card nmcli -t -f NAME,DEVICE connection show --active | grep -qx "$1"; }
    network_mode() { on_card cat /run/appliance/network.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mode"])'; }
    mode_is() { [ "$(network_mode 2>/dev/null)" = "$1" ]; }
    wait_for 180 "the camera joins TestNet on wlan0 (appliance.toml's network)" active_on appliance-wifi:wlan0
    check "... with an address from the test access point's DHCP" on_card "ip -4 -o addr show dev wlan0 | grep -q ' 10\.77\.0\.'"
    wait_for 60 "the network service says: connected" mode_is connected
    check "the keyfiles are root-only" test "$(on_card sudo stat -c %a /etc/NetworkManager/system-connections/appliance-wifi.nmconnection /etc/NetworkManager/system-connections/appliance-hotspot.nmconnection | sort -u)" = 600
    # In the field: the access point gone, and no Ethernet either (disconnected on the card, which takes
    # this test's SSH with it): the rest runs on the card, detached, and SSH is back when it is done.
    say "in the field: the test access point gone, the Ethernet disconnected (the card runs this part alone)"
    on_card sudo systemd-run --unit=hwsim-offline --collect /var/tmp/hwsim.sh offline appliance-test "'$hotspot_pass'"
    sleep 15
    offline_done() { on_card test -s /var/tmp/hwsim-offline; }
    wait_for 900 "the card's own part, and SSH back over the reconnected Ethernet" offline_done
    offline=$(on_card cat /var/tmp/hwsim-offline)
    say "$(tr '\n' ' ' <<<"$offline")"
    result() { sed -n "s/^$1=//p" <<<"$offline"; }
    hotspot_after_loss_s=$(result hotspot_after_s)
    check "the hotspot opened once no network had been up for hotspot_after_s (10 s)" test "$(result mode)" = hotspot
    check "NetworkManager had the hotspot up on wlan0" grep -q "appliance-hotspot:wlan0" <<<"$(result active)"
    check "a phone joined the hotspot with its passphrase and got an address in 10.42.0.0/24" grep -q '^10\.42\.0\.' <<<"$(result phone)"
    check "... and loaded the page at http://10.42.0.1/ (over the simulated air)" test "$(result page)" = 200
    check "a wrong passphrase was refused (no association)" test "$(result wrong)" = refused
    back_connected() { mode_is connected; }
    wait_for 120 "the Ethernet is back: the hotspot closes (connected)" back_connected
    hotspot_closed() { ! active_on appliance-hotspot:wlan0; }
    check "the hotspot is closed once a network is up again" hotspot_closed

    # --- a boot with no network at all ----------------------------------------------------------------
    # The field from power-on: the Ethernet's link down (QEMU's set_link, before the guest runs) and no
    # access point for appliance.toml's TestNet; hotspot_after_s back at its default, 45 s counted from
    # boot. Nothing can be asked while no network is up: the console says when the network service
    # started, the link comes back 120 s after that, and the journal's monotonic time stamps (seconds
    # since the kernel started) say when what happened.
    say "a boot with no network: the hotspot from power-on (hotspot_after_s = 45, the default)"
    on_card "sudo sed -i -E 's/^hotspot_after_s = .*/hotspot_after_s = 45.0/' /boot/firmware/appliance.toml"
    on_card "echo mac80211_hwsim | sudo tee /etc/modules-load.d/hwsim-test.conf >/dev/null &&
        echo 'options mac80211_hwsim radios=1' | sudo tee /etc/modprobe.d/hwsim-test.conf >/dev/null"
    poweroff
    rm -f "$WORK/monitor.sock"
    boot no-network -S
    wait_for 30 "QEMU's monitor" test -S "$WORK/monitor.sock"
    monitor "set_link nic off"
    monitor "cont"
    network_service_started() { grep -aq "Started .*appliance-network.service" "$WORK/console-no-network.log"; }
    wait_for 900 "appliance-network.service to start (on the console)" network_service_started
    sleep 120
    monitor "set_link nic on"
    wait_for 300 "SSH once the Ethernet is back" on_card true
    wait_for 120 "the network service says: connected (the Ethernet is back)" mode_is connected
    journal=$(on_card sudo journalctl -b -o short-monotonic -u appliance-network.service)
    uptime_of() { grep -m1 -- "$1" <<<"$journal" | sed -n 's/^\[ *\([0-9]*\)\.[0-9]*\].*/\1/p'; }
    network_started_s=$(uptime_of "network: hotspot configured")
    hotspot_opening_s=$(uptime_of "hotspot: opening it")
    hotspot_from_boot_s=$(uptime_of "network: hotspot$")
    say "uptime: network service started $network_started_s s, hotspot opening $hotspot_opening_s s, up $hotspot_from_boot_s s"
    check "with no network from power-on, the hotspot came up" test -n "$hotspot_from_boot_s"
    check "... not before hotspot_after_s (45 s) counted from boot" test "${hotspot_opening_s:-0}" -ge 45
    check "... and closed when the Ethernet came back" grep -q "hotspot: closing it" <<<"$journal"
    poweroff_and_fsck
    say "figures (raspios base, stand-in)"
    printf '  build time (stand-in cached, appliance layer): %s s\n' "$build_s" >&2
    printf '  image: %s raw, %s .xz\n' "$(human "$raw_bytes")" "$([ -n "$xz_bytes" ] && human "$xz_bytes" || echo 'no (--quick)')" >&2
    printf '  first boot to the page answering: %s s; to the first classification: %s s (QEMU TCG, emulated Cortex-A72)\n' "$page_answers_s" "$first_classification_s" >&2
    printf '  the hotspot up after the network was lost: %s s (hotspot_after_s = 10)\n' "$hotspot_after_loss_s" >&2
    printf '  the hotspot up from power-on with no network: %s s after the kernel started (service started at %s s; hotspot_after_s = 45)\n' \
        "${hotspot_from_boot_s:-?}" "${network_started_s:-?}" >&2
    if [ "$failures" -gt 0 ]; then die "$failures boot-test check(s) failed"; fi
    say "boot test of the raspios base (stand-in) passed"
    exit 0
fi

say "plugging in USB sticks (ext4, exFAT, FAT32): udev starts each offload"
plug_stick ext4
kept_sha256s=$(offloaded_sha256s)
for fs in exfat vfat; do
    forget_offloads
    plug_stick "$fs"
done
if [ "$BENCH_OFFLOAD" = 1 ]; then
    say "bench-offload on the card (the kernel's drivers; emulated arm64, not a Pi's figures)"
    on_card sudo systemctl stop appliance.service
    on_card sudo TMPDIR=/var/tmp appliance bench-offload --items 60 --runs 5 --loop-io buffered \
        > "$REPO/build/bench-offload-qemu.json"
    on_card sudo systemctl start appliance.service
    say "bench-offload figures: $REPO/build/bench-offload-qemu.json"
fi

poweroff_and_fsck

say "the sticks, read on this machine"
for fs in ext4 exfat vfat; do
    check "$fs stick: exactly the two kept images, byte for byte, under <hostname>/, and the manifests" \
        test "$(stick_sha256s "$fs")" = "$kept_sha256s"
done

say "second boot"
qemu-img create -q -f qcow2 -F raw -b "$WORK/after.img" "$WORK/card.qcow2"
boot second
wait_for 600 "SSH at the second boot" on_card true
check "the first-boot unit did not run again" \
    test "$(on_card systemctl show -P ConditionResult appliance-firstboot.service)" = no
check "its record is unchanged" test "$(on_card cat /var/lib/appliance/first-boot.json)" = "$record"
loop_active() { test "$(on_card systemctl is-active appliance.service)" = active; }
wait_for 300 "appliance.service at the second boot" loop_active

# --- the real camera stack: picamera2 on libcamera's virtual camera -------------------------------
# The same photos as JPEGs (0.jpg, 1.jpg, …) in a folder that virtual.yaml names; the loop switched to
# camera.backend = "picamera2" in the boot partition's appliance.toml and restarted: frames now come
# through libcamera (NV12, buffers from udmabuf: Debian's kernel has no DMA heap) → picamera2 → the
# adapter → the model. The virtual camera shows each photo for 4 frames and loops, unpaced; the kept
# frames are told apart by their labels, which the replay camera kept for bird.bmp and parrot.jpg.
say "the real camera stack: picamera2 on libcamera's virtual camera"
# (on_card's arguments pass through the card's shell: what holds spaces is quoted for it)
check "the camera stack imports in the booted image" on_card "/opt/appliance/venv/bin/python -c 'import $DEBIAN_PYPI_IMPORTS'"
photos=$("$CACHE_DIR/host-venv/bin/python" - "$SHARED/images" "$WORK/virtual-camera" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageOps
source, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
n = 0
for path in sorted(source.iterdir()):
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
    except OSError:
        continue  # not a photo (COPYRIGHT)
    # Even sizes: libcamera converts each JPEG to NV12, whose chroma planes are half the size.
    width, height = image.size
    image.crop((0, 0, width - width % 2, height - height % 2)).save(out / f"{n}.jpg", quality=95)
    n += 1
print(n)
PY
)
on_card sudo install -d -m 755 /var/lib/appliance/virtual-camera
tar -C "$WORK/virtual-camera" -c . | on_card sudo tar -x --no-same-owner --touch -C /var/lib/appliance/virtual-camera
on_card sudo install -d -m 755 /usr/share/libcamera/pipeline/virtual
on_card sudo tee /usr/share/libcamera/pipeline/virtual/virtual.yaml >/dev/null <<'YAML'
%YAML 1.1
---
"Virtual0":
  supported_formats:
  - width: 1280
    height: 720
  frames:
    path: "/var/lib/appliance/virtual-camera/"
  location: "CameraLocationExternal"
  model: "libcamera virtual camera"
YAML
on_card "sudo sed -i -e 's/^backend = \"replay\"\$/backend = \"picamera2\"/' -e 's/^still_size = .*/still_size = [1280, 720]/' /boot/firmware/appliance.toml"
check "appliance.toml on the boot partition now says picamera2, 1280x720" \
    on_card "sudo grep -qx 'backend = \"picamera2\"' /boot/firmware/appliance.toml && sudo grep -qx 'still_size = \[1280, 720\]' /boot/firmware/appliance.toml"
last_id=$(api "/api/v1/captures?limit=100" | python3 -c 'import json,sys; print(max([i["id"] for i in json.load(sys.stdin)["items"]] or [0]))')
on_card sudo systemctl restart appliance.service
camera_status() {  # camera_status KEY: the loop's camera (backend, description) from the status API
    api /api/v1/status | python3 -c "import json,sys; l=json.load(sys.stdin)['loop'] or {}; print((l.get('camera') or {}).get('$1', ''))"
}
picamera2_labels() {  # the labels kept since the switch, sorted, |-separated
    api "/api/v1/captures?after=$last_id&limit=100" | python3 -c 'import json,sys; print("|".join(sorted(i["label"] for i in json.load(sys.stdin)["items"])))'
}
picamera2_running() { [ "$(camera_status backend)" = picamera2 ] && classified; }
wait_for 300 "the first classification through picamera2" picamera2_running
# Until both are kept and the loop has classified more frames than one round of the photos (or a
# third label shows up, or 15 minutes pass): then the check below says what was kept.
until=$((SECONDS + 900))
while [ $SECONDS -lt $until ]; do
    labels=$(picamera2_labels || true)
    [ "$labels" = "$kept_labels" ] && [ "$(frames classified)" -gt $((4 * photos)) ] && break
    [ "$(tr '|' '\n' <<<"$labels" | grep -c .)" -le 2 ] || break
    sleep 5
done
say "kept through picamera2: ${labels:-nothing} ($(frames classified) frames classified in $((SECONDS - until + 900)) s)"
check "picamera2 on the virtual camera kept exactly the frames of bird.bmp and parrot.jpg" \
    test "$(picamera2_labels)" = "$kept_labels"
check "the status shows libcamera's virtual camera through picamera2" \
    grep -q "libcamera virtual camera" <<<"$(camera_status description)"
check "appliance.service is active on picamera2" test "$(on_card systemctl is-active appliance.service)" = active
check "the journal shows no Python traceback on picamera2" no_traceback
poweroff

# --- the read-only root ---------------------------------------------------------------------------
# The same config built with --read-only-root: first boot sets the card up, switches overlayroot on
# in cmdline.txt and reboots (QEMU exits: -no-reboot); the next boot runs with the OS read-only.
say "read-only root: building (no xz)"
start=$SECONDS
build --name appliance-boot-test-ro --read-only-root --no-xz
ro_build_s=$((SECONDS - start))
mv "$(ls "$WORK"/deploy/appliance-boot-test-ro-*.img)" "$WORK/ro.img"
rm -f "$WORK/card.img" "$WORK/after.img" "$WORK/card.qcow2"
from_card "$WORK/ro.img"
qemu-img create -q -f qcow2 -F raw -b "$WORK/ro.img" "$WORK/card.qcow2" 8G
say "read-only root: first boot (it reboots by itself once set up)"
boot ro-first
until=$((SECONDS + 900))
while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ $SECONDS -lt $until ] || { tail -40 "$WORK/console-ro-first.log" >&2; die "the read-only-root image did not reboot within 900 s of its first boot"; }
    sleep 3
done
wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
qemu-img convert -O raw "$WORK/card.qcow2" "$WORK/ro-after.img"
from_card "$WORK/ro-after.img"
check "first boot switched overlayroot on in cmdline.txt" grep -q "overlayroot=tmpfs:recurse=0" <<<"$card_cmdline"
rm -f "$WORK/card.qcow2"
qemu-img create -q -f qcow2 -F raw -b "$WORK/ro-after.img" "$WORK/card.qcow2"
say "read-only root: second boot"
boot ro-second
wait_for 600 "the first classification with a read-only root" classified
wait_for 300 "SSH with a read-only root" on_card true
check "the root filesystem is an overlay" test "$(on_card findmnt -no FSTYPE /)" = overlay
lower_is_read_only() { on_card findmnt -no OPTIONS /media/root-ro | grep -q '^ro'; }
check "the OS underneath is mounted read-only" lower_is_read_only
check "the data partition is ext4 at /var/lib/appliance and grew to the card (> 6 GB)" \
    test "$(on_card findmnt -bno FSTYPE,SIZE /var/lib/appliance | awk '$1 == "ext4" {print $2}')" -gt 6000000000
check "appliance.service is active with a read-only root" test "$(on_card systemctl is-active appliance.service)" = active
ro_kept=$(api "/api/v1/captures?limit=100" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' || echo 0)
check "kept images are written to the data partition (the first boot's and this boot's)" test "$ro_kept" -ge 2
poweroff
# card.qcow2 is backed by ro-after.img: the card as it is now goes to a file of its own.
qemu-img convert -O raw "$WORK/card.qcow2" "$WORK/ro-final.img"
LOOPS+=("$(loop_partition "$WORK/ro-final.img" 2)")
check "fsck passes on the read-only root after a poweroff" e2fsck -fn "${LOOPS[-1]}"
LOOPS+=("$(loop_partition "$WORK/ro-final.img" 3)")
check "fsck passes on the data partition after a poweroff" e2fsck -fn "${LOOPS[-1]}"
losetup -d "${LOOPS[-2]}"
losetup -d "${LOOPS[-1]}"; LOOPS=()

# --- figures ----------------------------------------------------------------------------------
cold_s=$([ "$build_kind" = cold ] && echo "$build_s" || cat "$CACHE_DIR/last-cold-build-seconds" 2>/dev/null || echo "?")
say "figures"
printf '  build time: cold %s s%s; with the base cached: %s s\n' "$cold_s" \
    "$([ "$build_kind" = cold ] || echo ' (an earlier run: this one found the base cached)')" \
    "$([ "$build_kind" = cached ] && echo "$build_s" || echo "$((ro_build_s + ${compress_s:-0})) (the read-only-root build, $ro_build_s s, plus the first build's xz, ${compress_s:-?} s)")" >&2
printf '  image: %s raw, %s .xz\n' "$(human "$raw_bytes")" "$([ -n "$xz_bytes" ] && human "$xz_bytes" || echo 'no (--quick)')" >&2
printf '  first boot to the page answering: %s s; to the first classification: %s s (QEMU TCG, emulated Cortex-A72)\n' "$page_answers_s" "$first_classification_s" >&2
printf '  read-only-root image: built in %s s (cached base, no xz)\n' "$ro_build_s" >&2
if [ "$failures" -gt 0 ]; then die "$failures boot-test check(s) failed"; fi
say "boot test passed"
