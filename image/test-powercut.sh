#!/usr/bin/env bash
# The power-cut harness: power cuts that lose the page cache, the way file systems are tested.
#
#   image/test-powercut.sh [--states N] [--seconds S] [--seed N] [--shared DIR] [--break NAME] [--log FILE]
#                          [--data-fs ext4|ext4-nojournal]
#
# 1. Record: in the camera VM (image/test-camera-vm.sh; Debian's kernel), dm-log-writes records every
#    write, flush and FUA of a data partition (ext4, as on the card; --data-fs ext4-nojournal: without a
#    journal, where an fsync makes durable its own file and nothing else) and a USB stick (FAT32) while `appliance run`
#    keeps every frame at full speed for S seconds (default 75) and `appliance offload` copies to the
#    stick twice meanwhile (image/powercut/record.py). Then, in the same VM, an offload onto a stick
#    whose copies read back wrong (dm-flakey corrupts reads) must mark nothing, and a second one,
#    once the stick is sound, everything.
# 2. Replay and check: on this machine, the log is replayed to N crash states (default 100): flush
#    points spread evenly and random points between them; each is mounted and checked as the power
#    cut left it and after the appliance's start-up reconciliation (image/powercut/check.py says what
#    is checked). The figures go to build/powercut.json, with the states checked per minute.
#
# --break NAME: record with a copy of the tree broken on purpose (image/powercut/breaks.py: no-file-fsync,
# no-dir-fsync, row-before-rename, offload-mark-early), on the data filesystem that break shows on (breaks.py
# --data-fs NAME: ext4 without a journal for no-dir-fsync, ext4 for the others); the run passes only if the
# harness catches it (some state fails). --log FILE: keep the recorded log (and disk size) there, or, if FILE
# exists already, replay it instead of recording again. Needs root. `.ci/run` runs 100 states; `./dev
# acceptance` 1,000, 200 without a journal, and each break.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
IMAGE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
. "$IMAGE_DIR/lib/common.sh"

SHARED="$REPO/../shared" STATES=100 SECONDS_TOTAL=75 SEED=1 BREAK="" KEEP_LOG="" DATA_FS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --states) STATES="${2:?}"; shift 2 ;;
        --seconds) SECONDS_TOTAL="${2:?}"; shift 2 ;;
        --seed) SEED="${2:?}"; shift 2 ;;
        --shared) SHARED="${2:?}"; shift 2 ;;
        --break) BREAK="${2:?}"; shift 2 ;;
        --log) KEEP_LOG=$(realpath "${2:?}"); shift 2 ;;
        --data-fs) DATA_FS="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done
if [ -z "$DATA_FS" ]; then
    DATA_FS=ext4
    [ -z "$BREAK" ] || DATA_FS=$(python3 "$IMAGE_DIR/powercut/breaks.py" --data-fs "$BREAK") || exit 1
fi
case "$DATA_FS" in ext4|ext4-nojournal) ;; *) die "--data-fs is ext4 or ext4-nojournal, not $DATA_FS" ;; esac
need_root "image/test-powercut.sh (loop mounts, and the camera VM)"
need mcopy:mtools mount:mount e2fsck:e2fsprogs
PYTHON="$REPO/.venv/bin/python"
[ -x "$PYTHON" ] || die "no $PYTHON: run ./dev setup first (the checks run the appliance's own reconciliation)"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/appliance-powercut.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DISK_BYTES=$((512 * 1024 * 1024))
SECTORS=$((DISK_BYTES / 512))
DATA_BYTES=$(( (SECTORS * 3 / 4) / 2048 * 2048 * 512 ))  # as record.py splits it
truncate -s "$DISK_BYTES" "$WORK/disk.img"
truncate -s 8G "$WORK/log.img"  # sparse: the log takes what is written

tree="$REPO"
if [ -n "$BREAK" ]; then
    say "a copy of the tree, broken on purpose: $BREAK"
    tree="$WORK/tree"
    mkdir "$tree"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --no-recursion) |
            tar -C "$tree" -xf -
    else
        tar -C "$REPO" --exclude=./.venv --exclude=./build --exclude=__pycache__ -cf - . | tar -C "$tree" -xf -
    fi
    python3 "$IMAGE_DIR/powercut/breaks.py" "$BREAK" "$tree"
    diff -ru -x __pycache__ "$REPO/appliance" "$tree/appliance" >&2 || true
fi

if [ -n "$KEEP_LOG" ] && [ -s "$KEEP_LOG" ]; then
    say "replaying the log kept in $KEEP_LOG (no new recording)"
    cp --sparse=always "$KEEP_LOG" "$WORK/log.img"
    cp "$KEEP_LOG.json" "$WORK/record.json"
    record_s=0
else
    say "recording ${SECONDS_TOTAL} s of keeping and two offloads on $DATA_FS (dm-log-writes, in the camera VM)"
    start=$SECONDS
    "$tree/image/test-camera-vm.sh" --shared "$SHARED" --timeout 1800 --disk "$WORK/disk.img" --disk "$WORK/log.img" \
        --run "$tree/image/powercut/record.py" $((SECONDS_TOTAL / 3)) "$SECONDS_TOTAL" "$DATA_FS"
    record_s=$((SECONDS - start))
    cp "$tree/build/camera-vm-logs/record.json" "$WORK/record.json" 2>/dev/null || die "the recording wrote no record.json"
    say "recorded in $record_s s: $(tr -s ' \n' ' ' < "$WORK/record.json"); log $(du -h "$WORK/log.img" | cut -f1)"
    if [ -n "$KEEP_LOG" ]; then cp --sparse=always "$WORK/log.img" "$KEEP_LOG"; cp "$WORK/record.json" "$KEEP_LOG.json"; fi
fi

if [ "$record_s" -gt 0 ]; then
    # The offload onto a stick whose copies read back wrong (record.py's unreadable_copies).
    "$PYTHON" - "$WORK/record.json" <<'PY' || die "the offload onto a stick that reads back wrong was not handled right (above)"
import json, sys
v = json.load(open(sys.argv[1]))["unreadable_copies"]
print(f"  stick reading back wrong: exit {v['corrupting']['exit']}, {v['corrupting']['marked']} of {v['kept']} marked "
      f"({v['corrupting']['said']}); made sound: exit {v['sound']['exit']}, {v['sound']['marked']} marked")
ok = v["kept"] > 0 and v["corrupting"]["exit"] == 1 and v["corrupting"]["marked"] == 0 \
    and v["sound"]["exit"] == 0 and v["sound"]["marked"] == v["kept"]
sys.exit(0 if ok else "a copy that read back wrong was marked, or the retry did not mark everything")
PY
fi

say "replaying $STATES crash states and checking each"
mkdir -p "$REPO/build"
status=0
"$PYTHON" "$IMAGE_DIR/powercut/check.py" "$WORK/log.img" "$DISK_BYTES" "$DATA_BYTES" --states "$STATES" --seed "$SEED" \
    --json "$WORK/check.json" > >(tee "$WORK/check.out") || status=$?
figures="$REPO/build/powercut${BREAK:+-$BREAK}.json"
[ -n "$BREAK" ] || [ "$DATA_FS" = ext4 ] || figures="$REPO/build/powercut-$DATA_FS.json"
"$PYTHON" - "$WORK/record.json" "$WORK/check.json" "$BREAK" "$record_s" > "$figures" <<'PY'
import json, sys
record, check, name, record_s = sys.argv[1:]
print(json.dumps({"break": name or None, "record": json.load(open(record)), "record_seconds": int(record_s),
                  "check": json.load(open(check))}, indent=1))
PY
if [ -n "$BREAK" ]; then
    [ "$status" -ne 0 ] || die "break $BREAK was NOT caught: every crash state passed"
    [ "$status" -eq 3 ] || die "the checks themselves failed (exit $status), so break $BREAK proves nothing"
    signature=$(python3 "$IMAGE_DIR/powercut/breaks.py" --signature "$BREAK")
    caught=$(grep -c -F -- "$signature" <(grep '^  FAIL state' "$WORK/check.out") || true)
    [ "$caught" -gt 0 ] || die "crash states failed, but none for the reason break $BREAK must cause ('$signature')"
    say "break $BREAK caught: $caught crash states failed with '$signature'"
    exit 0
fi
[ "$status" -ne 3 ] || die "the power-cut harness found crash states that fail (above)"
[ "$status" -eq 0 ] || die "the power-cut checks failed to run (exit $status)"
say "power-cut harness passed on $DATA_FS: figures in ${figures#"$REPO/"}"
