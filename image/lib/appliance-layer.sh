# The appliance layer, the same for both bases: the venv with the appliance and its aarch64 wheels,
# the default model (verified), systemd units, udev rules, tmpfiles, the service user, journald, the
# watchdog, avahi, and the config file on the boot partition.
# shellcheck shell=bash

# image_python: the wheels are chosen for the image's own Python (the root's python3: 3.13 on Debian
# trixie, 3.11 on Raspberry Pi OS Bookworm), and numpy and Pillow are pinned to the OS's own
# (python3-numpy, python3-pil): the venv keeps using those, which the OS's compiled modules were
# built against, and pip installs neither a second time.
image_python() {
    PY_VERSION=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
        die "the image's root has no working python3"
    PY_TAGS=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}"
             --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64
             --platform manylinux_2_28_aarch64 --platform manylinux_2_31_aarch64 --platform manylinux_2_34_aarch64
             --platform linux_aarch64 --platform any)
    OS_CONSTRAINTS="$WORK/constraints.txt"
    in_root python3 - > "$OS_CONSTRAINTS" <<'PY'
from importlib.metadata import PackageNotFoundError, version
for name in ("numpy", "pillow"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
PY
    OS_PROVIDED=$(sed 's/==.*//' "$OS_CONSTRAINTS" | paste -sd' ')
    cat "$IMAGE_DIR/constraints.txt" >> "$OS_CONSTRAINTS"
    say "the image's Python: $PY_VERSION; from the OS: $(grep -o '^[a-z].*==.*' "$OS_CONSTRAINTS" | paste -sd' ')"
}

# A venv on the build machine that runs the appliance's own CLI (config show, models fetch) natively,
# and pypa's installer for image/lib/install_wheels.py.
HOST_TOOLS=(installer==1.1.0)
host_venv() {
    local venv="$CACHE_DIR/host-venv" stamp
    stamp=$( { cat "$REPO/pyproject.toml"; echo "${HOST_TOOLS[*]}"; } | sha256sum | cut -c1-16)
    if [ ! -f "$venv/.stamp-$stamp" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv failed: apt-get install python3-venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "$REPO" "${HOST_TOOLS[@]}" >/dev/null
        touch "$venv/.stamp-$stamp"
    else
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$REPO" >/dev/null
    fi
    HOST_APPLIANCE="$venv/bin/appliance"
}

# wheels DIR: the appliance's wheel and every dependency's aarch64 wheel.
wheels() {
    local dir="$1"
    mkdir -p "$dir"
    "$CACHE_DIR/host-venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$dir" "$REPO" >/dev/null
    local wheel
    wheel=$(ls "$dir"/appliance-*.whl)
    "$CACHE_DIR/host-venv/bin/pip" download -q --disable-pip-version-check "${PY_TAGS[@]}" \
        -c "$OS_CONSTRAINTS" -d "$dir" "$wheel" ||
        die "could not download the aarch64 wheels from PyPI (see the messages above)"
    if [ "$CAMERA_FROM_PYPI" = 1 ]; then debian_pypi_wheels "$dir"; fi
    say "$(ls "$dir" | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
}

# venv_install WHEELDIR: /opt/appliance/venv (it sees the OS's packages) with the wheels, but those of
# what the OS provides. pip in the root would take ~10 min under emulation: the wheels, resolved and
# downloaded above, are unpacked natively (image/lib/install_wheels.py) and byte-compiled by the image's
# python3. All but the appliance is cached, keyed by the wheels and the image's Python, so a rebuild
# where only the appliance changed installs and compiles the appliance alone.
venv_install() {
    local wheeldir="$1" venv=/opt/appliance/venv deps=() wheel name key tar
    for wheel in "$wheeldir"/*.whl; do
        name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
        case " appliance $OS_PROVIDED " in *" $name "*) continue ;; esac
        deps+=("$wheel")
    done
    key=$( { in_root python3 -c 'import sys; print(sys.version)'; sha256sum "${deps[@]}" | cut -d' ' -f1
             cat "$IMAGE_DIR/lib/install_wheels.py"; } | sha256sum | cut -c1-16)
    tar="$CACHE_DIR/venv-$BASE-$key.tar"
    if [ -s "$tar" ]; then
        say "the venv's ${#deps[@]} dependencies from the cache: $tar"
        tar -C "$ROOT" --numeric-owner -xpf "$tar"
    else
        say "the venv's ${#deps[@]} dependencies: installing, then byte-compiling (arm64, emulated)"
        in_root python3 -m venv --without-pip --system-site-packages "$venv"
        "$CACHE_DIR/host-venv/bin/python" "$IMAGE_DIR/lib/install_wheels.py" "$ROOT" "$venv" "$PY_VERSION" "${deps[@]}"
        in_root "$venv/bin/python" -m compileall -q -j0 "$venv/lib/python$PY_VERSION/site-packages" >/dev/null
        rm -f "$CACHE_DIR/venv-$BASE-"*.tar  # the venv of older dependencies
        tar -C "$ROOT" --numeric-owner -cf "$tar.partial" "${venv#/}" && mv "$tar.partial" "$tar"
    fi
    "$CACHE_DIR/host-venv/bin/python" "$IMAGE_DIR/lib/install_wheels.py" "$ROOT" "$venv" "$PY_VERSION" \
        "$wheeldir"/appliance-*.whl
    in_root "$venv/bin/python" -m compileall -q -j0 "$venv/lib/python$PY_VERSION/site-packages/appliance" >/dev/null
}

# in_root COMMAND...: run an arm64 command in the image's root (qemu-user through binfmt_misc).
in_root() {
    chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$QEMU_CPU" PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

chroot_mounts() {
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mount --bind /dev "$ROOT/dev"
    mount --bind /dev/pts "$ROOT/dev/pts"
    mount -t tmpfs tmpfs "$ROOT/run"
    # Nothing starts inside the build chroot.
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
}

chroot_unmounts() {
    [ -n "${ROOT:-}" ] || return 0
    rm -f "$ROOT/usr/sbin/policy-rc.d"
    local m
    for m in run dev/pts dev sys proc; do
        mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"
    done
    return 0
}

appliance_layer() {
    local wheeldir="$WORK/wheels"
    host_venv
    image_python
    wheels "$wheeldir"

    chroot_mounts
    # libcamera, numpy and Pillow (and on Raspberry Pi OS picamera2 and lgpio) come from the OS.
    mkdir -p "$ROOT/opt/appliance"
    venv_install "$wheeldir"
    in_root ln -sf /opt/appliance/venv/bin/appliance /usr/local/bin/appliance
    install -m 644 "$REPO/README.md" "$ROOT/opt/appliance/README.md"
    install -d "$ROOT/opt/appliance/docs"
    install -m 644 "$REPO"/docs/*.md "$ROOT/opt/appliance/docs/"
    # Prove, before going on, that the arm64 install imports and finds its runtime, that picamera2 and
    # the rest of the camera stack import as the appliance imports them, and that the OS's numpy and
    # Pillow are the ones in use.
    local imports="lgpio"
    [ "$CAMERA_FROM_PYPI" = 1 ] && imports="$DEBIAN_PYPI_IMPORTS"
    in_root /opt/appliance/venv/bin/python -c "import appliance.inference.classifier, flask, sqlite_utils, gpiozero, $imports
import numpy, PIL
from appliance.cameras.picamera2_stack import load
load()
for module in numpy, PIL:
    assert module.__file__.startswith('/usr/lib/python3/'), f'the venv has its own {module.__name__}: {module.__file__}'" ||
        die "the appliance or its camera stack does not import inside the image, as above"

    # The service user; the login user for SSH and the console.
    install -m 644 "$REPO/systemd/appliance.sysusers" "$ROOT/usr/lib/sysusers.d/appliance.conf"
    in_root systemd-sysusers
    in_root id appliance >/dev/null
    in_root useradd --create-home --shell /bin/bash --groups sudo,video,appliance admin 2>/dev/null ||
        in_root usermod -a -G sudo,video,appliance admin
    in_root passwd --lock admin >/dev/null
    chroot_unmounts

    # Units, rules, tmpfiles, polkit.
    local unit
    for unit in appliance.service appliance-web.service appliance-web.socket appliance-offload@.service \
                appliance-firstboot.service appliance-system.service appliance-network.service \
                appliance-links.service; do
        install -m 644 "$REPO/systemd/$unit" "$ROOT/etc/systemd/system/$unit"
    done
    install -m 644 "$REPO/systemd/appliance.tmpfiles" "$ROOT/usr/lib/tmpfiles.d/appliance.conf"
    install -m 644 "$REPO/systemd/99-appliance-offload.rules" "$ROOT/etc/udev/rules.d/99-appliance-offload.rules"
    install -m 644 "$REPO/systemd/60-appliance-gpio.rules" "$ROOT/etc/udev/rules.d/60-appliance-gpio.rules"
    install -d -m 755 "$ROOT/etc/polkit-1/rules.d"
    install -m 644 "$REPO/systemd/appliance.polkit.rules" "$ROOT/etc/polkit-1/rules.d/50-appliance.rules"
    local file
    while IFS= read -r file; do
        install -D -o 0 -g 0 -m 644 "$IMAGE_DIR/rootfs/$file" "$ROOT/$file"
    done < <(cd "$IMAGE_DIR/rootfs" && find . -type f | sed 's|^\./||')
    chmod 440 "$ROOT/etc/sudoers.d/010_admin-nopasswd"
    if [ "$READ_ONLY_ROOT" = 1 ]; then
        install -m 644 "$REPO/systemd/appliance-read-only-root.service" "$ROOT/etc/systemd/system/"
        systemctl --root="$ROOT" enable appliance-read-only-root.service >/dev/null 2>&1
    fi
    # One unit per call: systemctl enables none of them if one is missing, and says which.
    local unit
    for unit in appliance.service appliance-web.socket appliance-firstboot.service appliance-system.service \
                appliance-network.service appliance-links.service NetworkManager.service systemd-timesyncd.service \
                avahi-daemon.service; do
        systemctl --root="$ROOT" enable "$unit" 2>&1 | { grep -v '^Created symlink' >&2 || true; }
        [ "$(systemctl --root="$ROOT" is-enabled "$unit" 2>&1)" = enabled ] || die "could not enable $unit in the image"
    done
    # NetworkManager is the one network stack (Ethernet by DHCP, Wi-Fi from appliance.toml): nothing
    # else may take an interface, and it writes /etc/resolv.conf itself (no systemd-resolved).
    for unit in systemd-networkd.service systemd-networkd.socket wpa_supplicant@wlan0.service; do
        systemctl --root="$ROOT" disable "$unit" >/dev/null 2>&1 || true
    done
    rm -f "$ROOT/etc/resolv.conf" && : > "$ROOT/etc/resolv.conf"
    # SSH stays off unless the boot partition's config gives a key (first boot turns it on).
    systemctl --root="$ROOT" disable ssh.service >/dev/null 2>&1 || true
    # ...and nowhere else: systemd-ssh-generator (systemd 256+) would bind sshd to AF_VSOCK in a VM and to
    # a local AF_UNIX socket whatever ssh.service says. Its AF_VSOCK probe also loads the vsock modules
    # while PID 1 waits on its generators (90 s at most): under emulation on a busy machine the modules'
    # signature checks took longer than that, and systemd froze at first boot.
    install -d -m 755 "$ROOT/etc/systemd/system-generators"
    ln -sfn /dev/null "$ROOT/etc/systemd/system-generators/systemd-ssh-generator"

    # Data, models, and the photos a replay camera plays.
    install -d -m 755 "$ROOT/var/lib/appliance/models"
    local fetch=("$HOST_APPLIANCE" models fetch default --dir "$ROOT/var/lib/appliance/models")
    [ -n "$MODELS_FROM" ] && fetch+=(--from "$MODELS_FROM")
    [ "$CORAL" = 1 ] && fetch+=(--edgetpu)
    "${fetch[@]}" || die "the default model could not be installed (with no internet, pass --models-from DIR)"
    if [ -n "$REPLAY_DIR" ]; then
        install -d "$ROOT/var/lib/appliance/replay"
        cp -r "$REPLAY_DIR/." "$ROOT/var/lib/appliance/replay/"
    fi
    local uid gid
    uid=$(awk -F: '$1 == "appliance" {print $3}' "$ROOT/etc/passwd")
    gid=$(awk -F: '$1 == "appliance" {print $4}' "$ROOT/etc/passwd")
    chown -R "$uid:$gid" "$ROOT/var/lib/appliance"

    # The one file a user edits, on the boot partition: every key with its comment.
    local config_in="${CONFIG:-/dev/null}"
    {
        echo "# The camera's settings. Edit this file on any computer (it is on the SD card's boot partition),"
        echo "# put the card back and boot. A wrong key or value stops the camera with a message naming it"
        echo "# (the red LED blinks; the page and 'journalctl -u appliance' say which). Reference:"
        echo "# /opt/appliance/docs/configuration.md on the camera, or docs/configuration.md of the source."
        echo
        "$HOST_APPLIANCE" config show "$config_in"
    } > "$WORK/appliance.toml" || die "the config ${CONFIG:-(defaults)} is not valid (see above)"
    install -m 644 "$WORK/appliance.toml" "$ROOT/boot/firmware/appliance.toml"

    # systemd's own check of the units as installed: the image's systemd-analyze, in the root (emulated;
    # nothing runs), as the build machine's may be older than the image's units and their keys.
    local units=(appliance.service appliance-web.service appliance-web.socket appliance-offload@sda1.service
                 appliance-firstboot.service appliance-system.service appliance-network.service
                 appliance-links.service)
    [ "$READ_ONLY_ROOT" = 1 ] && units+=(appliance-read-only-root.service)
    local verify_out
    verify_out=$(cd "$ROOT/etc/systemd/system" && cp appliance-offload@.service appliance-offload@sda1.service &&
        in_root systemd-analyze verify --man=no "${units[@]}" 2>&1; rm -f appliance-offload@sda1.service)
    [ -z "$verify_out" ] || die "systemd-analyze verify found problems in the installed units:
$verify_out"

    # Journald in memory (capped), the hardware watchdog, no daemons from the build left behind.
    rm -f "$ROOT/etc/ssh/ssh_host_"*
    : > "$ROOT/etc/machine-id"
    echo "$HOSTNAME_DEFAULT" > "$ROOT/etc/hostname"
}
