#!/usr/bin/env bash
# The camera VM test: the appliance's real-camera tests through real libcamera → real picamera2 → our
# adapter, in a small Debian trixie amd64 system booted in QEMU (TCG) with a script as init, where
# libcamera's virtual camera serves the photos of ../shared/images.
#
#   image/test-camera-vm.sh [--shared DIR] [--timeout S] [--disk FILE]... [--pytest ARGS... | --bench ARGS... | --run FILE ARGS...]
#
# Default: pytest tests/real_camera. --pytest: everything after it goes to pytest, inside the VM, in a
# copy of this working tree (paths relative to the repository). --bench: the camera benchmark
# (image/camera-vm/bench.py, its options after it; ~20 min; JSON into build/bench-camera-vm.json).
# --run FILE ARGS...: a Python file from this machine, run in the VM with the appliance's venv.
# --disk FILE: a raw disk image attached after the run disk (/dev/vdc, then /dev/vdd, ...), written in
# place (the power-cut harness records onto these).
# Fails when anything failed, when a test was skipped (here a skip is a failure) or when no test ran.
# The root filesystem is built once (~2 min; cached in ~/.cache/appliance-image/camera-vm-KEY); each run
# then boots it from a throw-away overlay with a second disk holding the tree, the models and photos,
# and the results, which are read back into build/camera-vm-logs/. Needs root.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/lib/camera-vm.sh"

SHARED="$REPO/../shared"
TIMEOUT_S=1800 MODE=pytest ARGS=(tests/real_camera) RUN_FILE="" DISKS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --shared) SHARED="${2:?}"; shift 2 ;;
        --timeout) TIMEOUT_S="${2:?}"; shift 2 ;;
        --disk) DISKS+=("$(realpath "${2:?}")"); shift 2 ;;
        --pytest) shift; MODE=pytest ARGS=("$@"); break ;;
        --bench) shift; MODE=bench ARGS=("$@"); TIMEOUT_S=$((TIMEOUT_S > 3600 ? TIMEOUT_S : 3600)); break ;;
        --run) RUN_FILE=$(realpath "${2:?}"); shift 2; MODE=run ARGS=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done
SHARED=$(realpath "$SHARED")
need_root "image/test-camera-vm.sh (it builds a root filesystem with mmdebstrap)"
need mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mke2fs:e2fsprogs \
     debugfs:e2fsprogs
[ -d "$SHARED/images" ] && [ -d "$SHARED/models/coral" ] || die "$SHARED must hold images/ and models/coral/"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/appliance-image"
LOGS="$REPO/build/camera-vm-logs"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/appliance-camera-vm.XXXXXX")
QEMU_PID="" TAIL_PID=""
cleanup() {
    local status=$?
    set +e
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; fi
    if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null; wait "$TAIL_PID" 2>/dev/null; fi
    mkdir -p "$LOGS" && cp "$WORK/console.log" "$LOGS/" 2>/dev/null
    rm -rf "$WORK"
    [ "$status" -eq 0 ] || echo "camera VM test failed; its console and results are in $LOGS" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$LOGS"; mkdir -p "$LOGS"

# --- the root filesystem (cached) --------------------------------------------------------------
mkdir -p "$CACHE_DIR"
vm="$CACHE_DIR/camera-vm-$(camera_vm_key)"
build_kind=cached; [ -s "$vm/root.ext4" ] || build_kind=cold
start=$SECONDS
(
    flock 9  # two runs at once build it once
    if [ ! -s "$vm/root.ext4" ]; then
        say "building the camera VM's root filesystem (Debian trixie amd64, natively; ~2 min)"
        camera_vm_build "$vm" > "$WORK/build.log" 2>&1 ||
            { tail -40 "$WORK/build.log" >&2; cp "$WORK/build.log" "$LOGS/"; die "the camera VM's root filesystem did not build (log: $LOGS/build.log)"; }
        # Older root filesystems (other keys) are a gigabyte each: only the newest is kept.
        find "$CACHE_DIR" -maxdepth 1 -name 'camera-vm-*' ! -name "$(basename "$vm")" ! -name '*.lock' \
            -exec rm -rf {} +
    fi
) 9> "$CACHE_DIR/camera-vm.lock"
build_s=$((SECONDS - start))
say "root filesystem ($build_kind, ${build_s} s): $vm"

# --- the run disk: the tree, the models and photos, what to run ----------------------------------
start=$SECONDS
disk="$WORK/disk"
mkdir -p "$disk/appliance" "$disk/shared/models" "$disk/results"
tar -C "$REPO" --exclude=__pycache__ --exclude=.pytest_cache --exclude=tests/artifacts -cf - \
    appliance tests models systemd pyproject.toml README.md | tar -C "$disk/appliance" -xf -
cp -rL "$SHARED/models/coral" "$disk/shared/models/"
[ -d "$SHARED/models/tf" ] && cp -rL "$SHARED/models/tf" "$disk/shared/models/"
cp -rL "$SHARED/images" "$disk/shared/images"
install -m 755 "$IMAGE_DIR/camera-vm/in-vm.sh" "$disk/in-vm.sh"
case "$MODE" in
    bench) echo run > "$disk/mode"; install -m 644 "$IMAGE_DIR/camera-vm/bench.py" "$disk/bench.py"
           ARGS=(/srv/bench.py "${ARGS[@]}") ;;
    run) echo run > "$disk/mode"; install -m 644 "$RUN_FILE" "$disk/run.py"; ARGS=(/srv/run.py "${ARGS[@]}") ;;
    *) echo "$MODE" > "$disk/mode" ;;
esac
[ ${#ARGS[@]} -eq 0 ] || printf '%s\0' "${ARGS[@]}" > "$disk/args"
mke2fs -q -t ext4 -L camera-run -d "$disk" "$WORK/run.ext4" "$(( $(du -sk "$disk" | cut -f1) + 256 * 1024 ))K"
qemu-img create -q -f qcow2 -F raw -b "$vm/root.ext4" "$WORK/root.qcow2"
say "run disk ready in $((SECONDS - start)) s; booting (QEMU TCG; the VM's output follows)"

# --- boot, run, power off -------------------------------------------------------------------------
: > "$WORK/console.log"  # for tail, before QEMU opens it
start=$SECONDS
extra_disks=()
for i in "${!DISKS[@]}"; do
    extra_disks+=(-drive "if=none,id=extra$i,file=${DISKS[$i]},format=raw"
                  -device "virtio-blk-pci,drive=extra$i")
done
# -cpu max: LiteRT's and numpy's x86-64 builds use SSE4/AVX, which QEMU's default CPU lacks.
qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -nographic -no-reboot \
    -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 init=/sbin/camera-vm-init quiet loglevel=3 panic=1" \
    -drive if=none,id=root,file="$WORK/root.qcow2",format=qcow2,cache=unsafe -device virtio-blk-pci,drive=root \
    -drive if=none,id=run,file="$WORK/run.ext4",format=raw -device virtio-blk-pci,drive=run \
    "${extra_disks[@]}" \
    -nic none -device virtio-rng-pci -vga none -bios qboot.rom \
    > "$WORK/console.log" 2>&1 < /dev/null &
QEMU_PID=$!
tail -n +1 -f --pid="$QEMU_PID" "$WORK/console.log" &
TAIL_PID=$!
timed_out=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$TIMEOUT_S" ]; then timed_out=1; kill "$QEMU_PID"; break; fi
    sleep 1
done
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""
run_s=$((SECONDS - start))
[ "$timed_out" = 0 ] || die "the VM did not finish within ${TIMEOUT_S} s (--timeout)"

# --- results ------------------------------------------------------------------------------------
debugfs -R "rdump /results $WORK" "$WORK/run.ext4" >/dev/null 2>&1 || true
cp -r "$WORK/results/." "$LOGS/" 2>/dev/null || true
status=$(cat "$WORK/results/status" 2>/dev/null || echo "none")
say "VM: boot to power-off ${run_s} s; root filesystem ${build_kind} (${build_s} s)"
[ "$status" != none ] || die "the VM wrote no exit status (it did not get to run the command: see the console above)"
junit_failed=0
if [ "$MODE" = pytest ]; then
    # A skip is a failure here: this VM exists so that these tests run.
    python3 - "$WORK/results/junit.xml" <<'PY' || junit_failed=1
import sys, xml.etree.ElementTree as ET
try:
    suites = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    sys.exit(f"no JUnit report from the VM ({e})")
suites = [suites] if suites.tag == "testsuite" else list(suites)
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("camera VM: {tests} tests, {failures} failed, {errors} errors, {skipped} skipped".format(**count))
for case in (c for s in suites for c in s.iter("testcase")):
    for skip in case.findall("skipped"):
        print(f"  SKIPPED (a failure here): {case.get('classname')}.{case.get('name')}: {skip.get('message')}")
sys.exit(count["tests"] == 0 or count["skipped"] > 0 or count["failures"] > 0 or count["errors"] > 0)
PY
fi
[ "$status" = 0 ] || die "the run in the camera VM failed (exit status $status)"
if [ "$MODE" = bench ]; then
    cp "$WORK/results/bench.json" "$REPO/build/bench-camera-vm.json" || die "the benchmark wrote no figures"
    say "figures: $REPO/build/bench-camera-vm.json"
fi
[ "$junit_failed" = 0 ] || die "the tests in the camera VM did not all run and pass (a skip is a failure here)"
say "camera VM test passed"
