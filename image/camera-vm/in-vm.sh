#!/bin/bash
# Inside the camera VM (image/test-camera-vm.sh puts this on the run disk, mounted at /srv, and the
# VM's init runs it): serve the photos through libcamera's virtual camera, install the appliance from
# the tree, run what the host asked for, leave the results in /srv/results.
#
# /srv holds: appliance/ (the tree: appliance, tests, pyproject.toml, ...), shared/ (models, images),
# mode (pytest, bench or run) and args (NUL-separated).
set -uo pipefail
export PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 TMPDIR=/tmp
results=/srv/results
mkdir -p "$results"
log() { printf 'camera-vm: %s (%d s since boot)\n' "$*" "$(cut -d. -f1 /proc/uptime)"; }
log "started"

# The loopback interface up (no network configuration runs here): tests serve the page on 127.0.0.1.
/usr/bin/python3 - <<'PY' || exit 1
import fcntl, socket, struct
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
PY

# The virtual camera serves a folder of JPEGs named 0.jpg, 1.jpg, … (every regular file in it is taken
# as a frame). Its decoder needs even sizes (the chroma plane of an odd height overruns its buffer), so
# an odd last row or column is cut off; nothing else changes. sources.txt maps each frame to its photo.
camera=/srv/virtual-camera
mkdir -p "$camera/frames"
/usr/bin/python3 - "$camera" /srv/shared/images <<'PY' || exit 1
import pathlib, sys
from PIL import Image
camera, images = map(pathlib.Path, sys.argv[1:])
sources = []
for photo in sorted(images.iterdir()):
    try:
        image = Image.open(photo)
        image.load()
    except OSError:
        continue  # COPYRIGHT and the like
    width, height = image.size
    image = image.convert("RGB").crop((0, 0, width - width % 2, height - height % 2))
    image.save(camera / "frames" / f"{len(sources)}.jpg", quality=95)
    sources.append(f"{len(sources)}.jpg {photo.name}")
(camera / "sources.txt").write_text("\n".join(sources) + "\n")
PY
cat > "$camera/virtual.yaml" <<YAML
# libcamera's virtual camera (src/libcamera/pipeline/virtual/README.md): the photos, NV12 only.
%YAML 1.1
---
"Virtual0":
  supported_formats:
  - width: 1920
    height: 1080
    frame_rates: [30]
  - width: 1280
    height: 720
    frame_rates: [30]
  frames:
    path: "$camera/frames/"
  location: "CameraLocationExternal"
  model: "Virtual Video Device"
YAML
mkdir -p /usr/share/libcamera/pipeline/virtual
cp "$camera/virtual.yaml" /usr/share/libcamera/pipeline/virtual/virtual.yaml
export APPLIANCE_VIRTUAL_CAMERA="$camera"
log "virtual camera: $(wc -l < "$camera/sources.txt") photos in $camera/frames"

log "installing the appliance from the tree"
pip install -q --no-deps --no-build-isolation --no-index --no-compile /srv/appliance > "$results/pip.log" 2>&1 ||
    { cat "$results/pip.log"; echo 1 > "$results/status"; exit 1; }

mode=$(cat /srv/mode)
args=()
[ -s /srv/args ] && mapfile -d '' -t args < /srv/args
cd /srv/appliance || exit 1
log "running: $mode ${args[*]}"
case "$mode" in
    pytest) python -m pytest -p no:cacheprovider --junitxml="$results/junit.xml" "${args[@]}" ;;
    run) python "${args[@]}" ;;
    *) echo "camera-vm: unknown mode $mode"; false ;;
esac
status=$?
echo "$status" > "$results/status"
log "done: exit status $status"
exit "$status"
