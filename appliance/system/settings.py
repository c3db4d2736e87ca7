"""The device's system settings ([system] in the config file) written into its root filesystem.

``apply`` makes the system match the config: host name, time zone, Wi-Fi, SSH keys and the admin
password; on the first boot it also grows the root filesystem to fill the SD card. It works on any
folder laid out like a Debian root, so tests (and a mounted image) use a folder; only with
``root = /`` does it touch the running system: its host name, and the Wi-Fi and SSH services.

* Idempotent: a file, link or password already as the config wants it is not touched, and the
  report of a second run is empty.
* Every file is written atomically (``appliance.storage.files``).
* No secret is logged, reported or recorded. The Wi-Fi passphrase is written only as the key
  wpa_passphrase would derive from it, in NetworkManager's keyfile (root-only). Clear-text passwords become hashes, and the config file is
  rewritten without them.
* Wi-Fi is a NetworkManager keyfile, and SSH is switched on and off by its ``multi-user.target.wants``
  link, both read at boot; with ``root = /`` a change is also made live now (without waiting, since
  this runs early in the boot).
* External commands (``findmnt``, ``growpart``, ``resize2fs``, ``ssh-keygen``, ``systemctl``,
  ``rfkill``, ``nmcli``) go through the injected ``run``, which is called like ``subprocess.run``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import stat
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from appliance import __version__
from appliance.clock import utc_iso
from appliance.config import Config, SystemConfig, remove_clear_text
from appliance.errors import SystemSettingsError
from appliance.network import HOTSPOT_ADDRESS, HOTSPOT_ID, HOTSPOT_PREFIX, WIFI_ID
from appliance.passwords import adopt_password, crypt_sha512
from appliance.system.root import RootFiles


ADMIN = "admin"
WANTS = "etc/systemd/system/multi-user.target.wants"
NM_WIFI_ID = WIFI_ID
NM_WIFI = f"etc/NetworkManager/system-connections/{NM_WIFI_ID}.nmconnection"
NM_HOTSPOT = f"etc/NetworkManager/system-connections/{HOTSPOT_ID}.nmconnection"
NM_STATE = "var/lib/NetworkManager/NetworkManager.state"
RFKILL_STATE = "var/lib/systemd/rfkill"
CMDLINE = "boot/firmware/cmdline.txt"
LEGACY_WPA_CONF = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
LEGACY_WPA_LINK = f"{WANTS}/wpa_supplicant@wlan0.service"
WIFI, SSH_SERVICE = "wifi", "ssh.service"
SSH_LINK, SSH_UNIT = f"{WANTS}/{SSH_SERVICE}", "/lib/systemd/system/ssh.service"
SSH_HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
FIRST_BOOT_RECORD = "var/lib/appliance/first-boot.json"
DATA_MOUNT = "var/lib/appliance"  # a partition of its own on images with a read-only root
DEFAULT_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class SystemReport:
    """What one ``apply`` changed (files, links, actions) and what it could not do; never a secret."""

    changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_changed(self) -> bool:
        return bool(self.changed)


def apply(config: Config, config_path: Path | None, root: Path = Path("/"), first_boot: bool = False,
          run=subprocess.run) -> SystemReport:
    """Make the system under ``root`` match ``config.system``; return what changed.

    ``config_path`` is the file ``config`` came from: clear-text passwords are removed from it.
    ``first_boot`` also grows the root filesystem and then writes ``var/lib/appliance/first-boot.json``,
    once. Raises ``SystemSettingsError`` naming the file or key, and the fix."""
    fs = RootFiles(Path(root), SystemReport())
    system = config.system
    _set_timezone(fs, system.timezone)
    _set_hostname(fs, system.hostname)
    switched = {}  # service -> start (True) or stop, for the services whose setting changed
    if _set_wifi(fs, system, config_path):
        switched[WIFI] = bool(system.wifi_ssid or system.hotspot_passphrase)
    if _set_ssh(fs, system, run):
        switched[SSH_SERVICE] = bool(system.ssh_keys)
    if fs.is_live and switched:
        _switch_services(run, switched)
    _set_admin_password(fs, system, config_path)
    if config.web.password and config_path is not None:
        adopt_password(config.web, config_path)  # here, as root: the web service cannot write the boot partition
        fs.note("web.password: hashed into web.password_hash")
    if first_boot:
        _grow_last_filesystem(fs, run)
        _record_first_boot(fs, config)
    return fs.report


def public_settings(system: SystemConfig) -> dict:
    """What was applied, fit for a log or a record: no passphrase, password or hash."""
    return {"hostname": system.hostname, "timezone": system.timezone,
            "wifi": {"ssid": system.wifi_ssid, "country": system.wifi_country,
                     "is_open": not system.wifi_passphrase} if system.wifi_ssid else None,
            "hotspot": {"ssid": system.hostname, "address": HOTSPOT_ADDRESS} if system.hotspot_passphrase else None,
            "ssh_keys": len(system.ssh_keys),
            "is_admin_password_set": bool(system.admin_password or system.admin_password_hash)}


# -- host name and time zone -------------------------------------------------------------------------

def _set_hostname(fs: RootFiles, hostname: str) -> None:
    fs.write("etc/hostname", f"{hostname}\n".encode())
    hosts = fs.read_text("etc/hosts", default=DEFAULT_HOSTS)
    fs.write("etc/hosts", hosts_with_hostname(hosts, hostname).encode())
    if fs.is_live and socket.gethostname() != hostname:
        try:
            socket.sethostname(hostname)
        except OSError as e:
            raise SystemSettingsError(f"cannot set the running host name to {hostname!r} ({e.strerror}): "
                                      "run this as root (sudo)") from None
        fs.note(f"running host name: {hostname}")


def hosts_with_hostname(text: str, hostname: str) -> str:
    """An /etc/hosts text whose one ``127.0.1.1`` line names ``hostname``; other lines kept."""
    lines, done = [], False
    for line in text.splitlines():
        if line.split()[:1] == ["127.0.1.1"]:
            if not done:
                lines.append(f"127.0.1.1\t{hostname}")
            done = True
            continue
        lines.append(line)
    if not done:
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def _set_timezone(fs: RootFiles, name: str) -> None:
    zone = fs.path("usr/share/zoneinfo") / name
    if not zone.is_file():
        raise SystemSettingsError(f"{zone}: no such file, so system.timezone = {name!r} is not a time zone here: "
                                  "use a name from `timedatectl list-timezones` such as \"Europe/Oslo\"")
    fs.link("etc/localtime", f"/usr/share/zoneinfo/{name}")
    fs.write("etc/timezone", f"{name}\n".encode())


# -- Wi-Fi ---------------------------------------------------------------------------------------------
# NetworkManager owns the network on both bases (Raspberry Pi OS's own choice): the Wi-Fi network is
# one keyfile of its own, the regulatory domain is set the way raspi-config sets it (cmdline.txt and
# the rfkill state systemd restores at boot), and NetworkManager's radio switch is on.

def _set_wifi(fs: RootFiles, system: SystemConfig, config_path: Path | None) -> bool:
    """Write or remove the network, the hotspot, the regulatory domain and the radio's state; True if
    any changed."""
    changed = _remove_legacy_wifi(fs)
    if system.wifi_ssid:
        changed |= fs.write(NM_WIFI, nm_wifi_keyfile(system, config_path).encode(), mode=0o600)
    else:
        changed |= fs.remove(NM_WIFI)
    if system.hotspot_passphrase:
        changed |= fs.write(NM_HOTSPOT, nm_hotspot_keyfile(system, config_path).encode(), mode=0o600)
    else:
        changed |= fs.remove(NM_HOTSPOT)
    if not (system.wifi_ssid or system.hotspot_passphrase):
        return changed
    changed |= _set_regulatory_domain(fs, system.wifi_country)
    for state in sorted(fs.path(RFKILL_STATE).glob("*:wlan")):  # 1 = blocked at the last shutdown
        changed |= fs.write(f"{RFKILL_STATE}/{state.name}", b"0\n")
    nm_state = fs.read_text(NM_STATE, "")
    if nm_state and "WirelessEnabled=false" in nm_state:
        changed |= fs.write(NM_STATE, nm_state.replace("WirelessEnabled=false", "WirelessEnabled=true").encode())
    return changed


def _remove_legacy_wifi(fs: RootFiles) -> bool:
    """What appliances before NetworkManager wrote: a second supplicant, if left, would fight it."""
    return fs.remove(LEGACY_WPA_LINK) | fs.remove(LEGACY_WPA_CONF)


def _set_regulatory_domain(fs: RootFiles, country: str) -> bool:
    """``cfg80211.ieee80211_regdom=XX`` in cmdline.txt, as raspi-config writes it (read at boot)."""
    current = fs.read_text(CMDLINE, "")
    if not current.strip():
        fs.warn(f"{CMDLINE}: missing, so the Wi-Fi country {country} is not set at boot")
        return False
    words = [w for w in current.split() if not w.startswith("cfg80211.ieee80211_regdom=")]
    wanted = " ".join([*words, f"cfg80211.ieee80211_regdom={country}"]) + "\n"
    return False if wanted.split() == current.split() else fs.write(CMDLINE, wanted.encode())


def nm_wifi_keyfile(system: SystemConfig, config_path: Path | None = None) -> str:
    """NetworkManager's keyfile for the config's network: the derived key, never the passphrase."""
    where = f"[system] in {config_path}" if config_path else "[system] in the appliance config"
    lines = [f"# Written by `appliance system apply` from {where}: change it there, not here.",
             "[connection]", f"id={NM_WIFI_ID}", f"uuid={uuid.uuid5(uuid.NAMESPACE_URL, 'appliance-wifi')}",
             "type=wifi", "interface-name=wlan0", "autoconnect=true", "",
             "[wifi]", "mode=infrastructure", f"ssid={nm_ssid(system.wifi_ssid)}", ""]
    if system.wifi_passphrase:
        lines += ["[wifi-security]", "key-mgmt=wpa-psk", f"psk={wpa_psk(system.wifi_passphrase, system.wifi_ssid)}", ""]
    lines += ["[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
    return "\n".join(lines)


def nm_hotspot_keyfile(system: SystemConfig, config_path: Path | None = None) -> str:
    """NetworkManager's keyfile for the camera's own access point: WPA2 (CCMP), the hostname as its
    name, the derived key, a fixed address that NetworkManager's shared mode serves DHCP and DNS
    from. Not started by NetworkManager itself: ``appliance network run`` opens it when no network is
    up."""
    where = f"[system] in {config_path}" if config_path else "[system] in the appliance config"
    return "\n".join([
        f"# Written by `appliance system apply` from {where}: change it there, not here.",
        "[connection]", f"id={HOTSPOT_ID}", f"uuid={uuid.uuid5(uuid.NAMESPACE_URL, HOTSPOT_ID)}",
        "type=wifi", "interface-name=wlan0", "autoconnect=false", "",
        "[wifi]", "mode=ap", f"ssid={nm_ssid(system.hostname)}", "band=bg", "",
        "[wifi-security]", "key-mgmt=wpa-psk", "proto=rsn", "pairwise=ccmp", "group=ccmp",
        f"psk={wpa_psk(system.hotspot_passphrase, system.hostname)}", "",
        "[ipv4]", "method=shared", f"address1={HOTSPOT_ADDRESS}/{HOTSPOT_PREFIX}", "",
        "[ipv6]", "method=ignore", ""])


def nm_ssid(ssid: str) -> str:
    """The keyfile's ``ssid=`` value: the name itself when it is plain printable ASCII, else its bytes as
    NetworkManager writes them (``72;105;`` …), which no keyfile escaping can misread."""
    raw = ssid.encode()
    if all(0x21 <= b < 0x7F for b in raw[:1] + raw[-1:]) and all(0x20 <= b < 0x7F for b in raw) \
            and not set(raw) & set(b";\\#"):
        return ssid
    return "".join(f"{b};" for b in raw)


def wpa_psk(passphrase: str, ssid: str) -> str:
    """The 256-bit WPA key as hex, derived as wpa_passphrase does; 64 hex digits are the key already."""
    if re.fullmatch(r"[0-9A-Fa-f]{64}", passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


# -- SSH and the admin password ------------------------------------------------------------------------

def _set_ssh(fs: RootFiles, system: SystemConfig, run) -> bool:
    """Keys, host keys and the service's link; True if the service was switched on or off."""
    keys = system.ssh_keys
    if not keys:
        user = _find_user(fs, ADMIN)
        if user:
            fs.remove(f"{user.home}/.ssh/authorized_keys")
        return fs.remove(SSH_LINK)
    user = _require_user(fs, "system.ssh_authorized_keys")
    owner = (user.uid, user.gid)
    if not fs.path(user.home).exists():
        fs.mkdir(user.home, 0o700, owner)
    fs.mkdir(f"{user.home}/.ssh", 0o700, owner)
    fs.write(f"{user.home}/.ssh/authorized_keys", ("\n".join(keys) + "\n").encode(), mode=0o600, owner=owner)
    if not fs.path(SSH_HOST_KEY).exists():
        fs.path("etc/ssh").mkdir(parents=True, exist_ok=True)
        _run(run, ["ssh-keygen", "-A", "-f", str(fs.root)])
        fs.note("SSH host keys generated")
    return fs.link(SSH_LINK, SSH_UNIT)


def _switch_services(run, switched: dict[str, bool]) -> None:
    """The running system read the files at boot: tell it. --no-block, as boot may be waiting for us."""
    wifi = switched.pop(WIFI, None)
    if wifi is not None:
        _run(run, ["nmcli", "connection", "reload"])
        if wifi:
            _run(run, ["rfkill", "unblock", "wifi"])  # the kernel's state; cmdline.txt's country counts from the next boot
            _run(run, ["nmcli", "radio", "wifi", "on"])  # NetworkManager then joins it by itself (autoconnect)
    if switched:
        _run(run, ["systemctl", "daemon-reload"])
    for service, is_on in switched.items():
        _run(run, ["systemctl", "restart" if is_on else "stop", "--no-block", service])


def _set_admin_password(fs: RootFiles, system: SystemConfig, config_path: Path | None) -> None:
    if not (system.admin_password or system.admin_password_hash):
        return  # nothing set: the password stays as it is
    _require_user(fs, "system.admin_password")
    path = fs.path("etc/shadow")
    try:
        text, found = path.read_text(), path.stat()
    except OSError as e:
        raise SystemSettingsError(f"{path}: cannot be read ({e.strerror}): run this as root (sudo)") from None
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.rstrip("\n").split(":")
        if fields[0] == ADMIN and len(fields) > 1:
            break
    else:
        raise SystemSettingsError(f"{path}: no line for {ADMIN!r}, whose password system.admin_password sets: "
                                  f"create the user with `adduser {ADMIN}`")
    password_hash = _admin_hash(system, current_hash=fields[1])
    fields[1] = password_hash
    lines[i] = ":".join(fields) + "\n"
    fs.write("etc/shadow", "".join(lines).encode(), mode=stat.S_IMODE(found.st_mode),
             owner=(found.st_uid, found.st_gid), label=f"etc/shadow: {ADMIN}'s password")
    if system.admin_password and config_path is not None:
        try:
            remove_clear_text(config_path, "system", "admin_password", password_hash)
        except (OSError, ValueError) as e:
            fs.warn(f"could not remove the clear-text system.admin_password from {config_path} ({e}): "
                    "it stays readable there")
        else:
            fs.note("system.admin_password: hashed into system.admin_password_hash")


def _admin_hash(system: SystemConfig, current_hash: str) -> str:
    if not system.admin_password:
        return system.admin_password_hash
    if current_hash.startswith("$") and crypt_sha512(system.admin_password, current_hash) == current_hash:
        return current_hash  # already this password: a new salt would change the file for nothing
    return crypt_sha512(system.admin_password)


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int
    home: str  # relative to the root


def _find_user(fs: RootFiles, name: str) -> _User | None:
    for line in fs.read_text("etc/passwd", default="").splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 6:
            return _User(int(fields[2]), int(fields[3]), fields[5].lstrip("/"))
    return None


def _require_user(fs: RootFiles, key: str) -> _User:
    user = _find_user(fs, ADMIN)
    if user is None:
        raise SystemSettingsError(f"{fs.path('etc/passwd')}: no user {ADMIN!r}, whom {key} is for: "
                                  f"create it with `adduser {ADMIN}`, or leave {key} empty")
    return user


# -- the first boot ------------------------------------------------------------------------------------

def _grow_last_filesystem(fs: RootFiles, run) -> None:
    """Grow the card's last partition to the end of the card (growpart), then its filesystem (resize2fs).

    That is the data partition mounted at /var/lib/appliance when the image has one (a read-only
    root), else the root filesystem."""
    data = _run(run, ["findmnt", "-no", "SOURCE", "--mountpoint", str(fs.path(DATA_MOUNT))],
                allowed=lambda r: r.returncode == 1)
    what, mount = ("data", fs.path(DATA_MOUNT)) if data.stdout.strip() else ("root", fs.root)
    source = data.stdout.strip() if what == "data" else _run(run, ["findmnt", "-no", "SOURCE", str(mount)]).stdout.strip()
    source = re.sub(r"\[.*\]$", "", source)  # a btrfs subvolume's suffix
    if not source.startswith("/dev/"):
        fs.warn(f"{mount} is not mounted from a block device ({source or 'not a mount point'}): nothing to grow")
        return
    partition = Path(source).name
    block = fs.path("sys/class/block") / partition
    try:
        number = int((block / "partition").read_text())
    except (OSError, ValueError):
        fs.warn(f"{source} is not a partition of a disk: nothing to grow")
        return
    disk = f"/dev/{block.resolve().parent.name}"
    grown = _run(run, ["growpart", disk, str(number)], allowed=lambda r: r.returncode == 1 and "NOCHANGE" in r.stdout)
    if grown.returncode == 0:
        fs.note(f"{what} partition grown: {disk} partition {number}")
    resized = _run(run, ["resize2fs", source])
    if "Nothing to do" not in resized.stdout + resized.stderr:
        fs.note(f"{what} filesystem resized: {source}")


def _record_first_boot(fs: RootFiles, config: Config) -> None:
    """Written last and once: its presence says the first boot's work is done."""
    if fs.path(FIRST_BOOT_RECORD).exists():
        return
    record = {"time_utc": utc_iso(), "version": __version__,
              "settings": public_settings(config.system), "changed": list(fs.report.changed)}
    fs.write(FIRST_BOOT_RECORD, (json.dumps(record, indent=2) + "\n").encode())


def _run(run, args: list[str], allowed=lambda result: False):
    try:
        result = run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SystemSettingsError(f"{args[0]}: not installed, and `appliance system apply` needs it") from None
    if result.returncode != 0 and not allowed(result):
        output = (result.stderr or result.stdout or "").strip().splitlines()
        raise SystemSettingsError(f"`{' '.join(args)}` failed (exit {result.returncode})"
                                  + (f": {output[-1]}" if output else ""))
    return result
