# Shared by image/build.sh and image/test-boot.sh: messages, timed stages, prerequisites, clean-up.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# stage NAME COMMAND...: run one build stage, say when it starts and how long it took.
declare -a STAGE_TIMES=()
stage() {
    local name="$1"; shift
    local start=$SECONDS
    say "[$name] start"
    "$@"
    local took=$((SECONDS - start))
    STAGE_TIMES+=("$(printf '%-12s %4d s' "$name" "$took")")
    say "[$name] done in ${took} s"
}

stage_summary() {
    local line
    say "stage times:"
    for line in "${STAGE_TIMES[@]}"; do printf '    %s\n' "$line" >&2; done
}

# need COMMAND:PACKAGE ...: stop, naming every missing Debian package at once. A COMMAND that is an
# absolute path is a file that must exist.
need() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd="${pair%%:*}"; pkg="${pair#*:}"
        if [[ "$cmd" == /* ]]; then [ -e "$cmd" ] || missing+=("$pkg"); continue; fi
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        die "missing prerequisites; install them with:
    apt-get install --no-install-recommends ${missing[*]}"
    fi
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (it makes filesystems, chroots and loop devices): run it with sudo"
}

# arm64 programs under qemu-user run as a Cortex-A72 (the Pi 4's core, ARMv8.0). QEMU's default CPU
# implements pointer authentication, which Debian trixie's binaries use in every function (branch
# protection) and QEMU computes slowly: a Python loop ran 45 times slower than as a Cortex-A72, where
# those instructions are no-ops. mmdebstrap and chroot pass it on; in_root sets it explicitly.
export QEMU_CPU=cortex-a72

# Foreign-architecture chroots need binfmt_misc mounted and qemu-aarch64 registered (static, F flag).
ensure_binfmt() {
    if [ "$(uname -m)" = aarch64 ]; then return 0; fi
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (needed to run arm64 programs)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
        die "qemu-aarch64 is not registered with binfmt_misc: apt-get install qemu-user-static binfmt-support"
}

# partition_field IMG N start|size: partition N of a disk image, in 512-byte sectors (from sfdisk).
partition_field() {
    sfdisk --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2 - 1]['$3'])"
}

# loop_partition IMG N: a read-only loop device over partition N (losetup -P makes no partition nodes here).
loop_partition() {
    losetup --find --show -r -o $(( $(partition_field "$1" "$2" start) * 512 )) \
        --sizelimit $(( $(partition_field "$1" "$2" size) * 512 )) "$1"
}

# human BYTES: 1.2 GB style.
human() { numfmt --to=si --suffix=B "$1"; }
