"""[system] settings applied to a real folder laid out like a Debian root, as on the SD card."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import stat
import subprocess

import pytest
from werkzeug.security import check_password_hash

from appliance.cli import main
from appliance.config import load_config, to_toml
from appliance.errors import ConfigError, SystemSettingsError
from appliance.system.read_only_root import set_read_only_root
from appliance.system.settings import FIRST_BOOT_RECORD, apply, hosts_with_hostname, nm_ssid, wpa_psk

ADMIN_UID = 1000
MMC = "sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:59b4/block/mmcblk0"


def openssl_passwd(password, salt=None):
    """crypt(3)'s SHA-512 hash of ``password`` as openssl computes it: a check independent of our own code
    (Python 3.13 has no crypt module)."""
    salt_args = ["-salt", salt] if salt else []
    return subprocess.run(["openssl", "passwd", "-6", *salt_args, "-stdin"], input=password + "\n",
                          capture_output=True, text=True, check=True).stdout.strip()


def is_hash_of(password, password_hash):
    return openssl_passwd(password, password_hash.split("$")[2]) == password_hash


def public_key(kind="ssh-ed25519", comment="me@laptop"):
    """A well-formed OpenSSH public key line: its base64 blob starts with its own type."""
    blob = len(kind).to_bytes(4, "big") + kind.encode() + (32).to_bytes(4, "big") + bytes(range(32))
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


KEY_1, KEY_2 = public_key(), public_key("ecdsa-sha2-nistp256", "phone")


@pytest.fixture
def root(tmp_path):
    """A Debian root as the image leaves it: an admin user, stock hosts, zoneinfo, unit files, a card."""
    root = tmp_path / "root"
    files = {
        "etc/passwd": f"root:x:0:0:root:/root:/bin/bash\nadmin:x:{ADMIN_UID}:{ADMIN_UID}:Admin:/home/admin:/bin/bash\n",
        "etc/shadow": "root:*:19700:0:99999:7:::\nadmin:!:19700:0:99999:7:::\n",
        "etc/hostname": "raspberrypi\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\traspberrypi\n",
        "etc/ssh/ssh_host_ed25519_key": "(the image's host key)\n",
        "usr/share/zoneinfo/UTC": "TZif2 UTC",
        "usr/share/zoneinfo/Europe/Oslo": "TZif2 Oslo",
        "lib/systemd/system/ssh.service": "[Unit]\nDescription=OpenBSD Secure Shell server\n",
        "boot/firmware/cmdline.txt": "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 "
                                     "fsck.repair=yes rootwait\n",
        # Raspberry Pi OS trixie leaves the radio blocked until a country is set (pi-gen stage2)
        "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan": "1\n",
        "var/lib/NetworkManager/NetworkManager.state": "[main]\nNetworkingEnabled=true\nWirelessEnabled=false\n"
                                                       "WWANEnabled=true\n",
        f"{MMC}/mmcblk0p2/partition": "2\n",
        f"{MMC}/mmcblk0p3/partition": "3\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "etc/shadow").chmod(0o640)
    (root / "home/admin").mkdir(parents=True)
    (root / "sys/class/block").mkdir(parents=True)
    for part in ("mmcblk0p2", "mmcblk0p3"):
        (root / "sys/class/block" / part).symlink_to(f"../../{MMC.removeprefix('sys/')}/{part}")
    return root


@pytest.fixture
def write_config(tmp_path):
    def write(text):
        path = tmp_path / "appliance.toml"
        path.write_text(text)
        return path
    return write


FULL = f'''# my camera
[system]
# what it is called on the network
hostname = "birdcam"
timezone = "Europe/Oslo"
wifi_country = "NO"
wifi_ssid = "IEEE"
wifi_passphrase = "password"
ssh_authorized_keys = """
{KEY_1}
{KEY_2}
"""
# the console login
admin_password = "hunter2-console"

[web]
# the page password
password = "s3cret-page"
port = 8080
'''


def shadow_hash(root):
    line = next(line for line in (root / "etc/shadow").read_text().splitlines() if line.startswith("admin:"))
    return line.split(":")[1]


class Card:
    """findmnt, growpart and resize2fs as they answer on a fresh card whose root is mmcblk0p2 (and,
    with ``data_partition``, whose /var/lib/appliance is mmcblk0p3).

    The one stand-in: there is no SD card here. Everything else (ssh-keygen) runs for real."""

    def __init__(self, data_partition=False):
        self.calls, self.is_grown, self.is_resized = [], False, False
        self.data_partition = data_partition

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        if args[0] == "findmnt" and "--mountpoint" in args:
            if self.data_partition:
                return subprocess.CompletedProcess(args, 0, "/dev/mmcblk0p3\n", "")
            return subprocess.CompletedProcess(args, 1, "", "")
        if args[0] == "findmnt":
            return subprocess.CompletedProcess(args, 0, "/dev/mmcblk0p2\n", "")
        if args[0] == "growpart":
            if self.is_grown:
                return subprocess.CompletedProcess(args, 1, "NOCHANGE: partition 2 is size 61069312. it cannot be grown\n", "")
            self.is_grown = True
            return subprocess.CompletedProcess(args, 0, "CHANGED: partition=2 start=1056768 old: size=7331840 "
                                                        "end=8388608 new: size=61069312 end=62126080\n", "")
        if args[0] == "resize2fs":
            if self.is_resized:
                return subprocess.CompletedProcess(args, 0, "", "resize2fs 1.47.0 (5-Feb-2023)\nThe filesystem is "
                                                                "already 7633664 (4k) blocks long.  Nothing to do!\n\n")
            self.is_resized = True
            return subprocess.CompletedProcess(args, 0, "Resizing the filesystem on /dev/mmcblk0p2 to 7633664 (4k) "
                                                        "blocks.\n", "resize2fs 1.47.0 (5-Feb-2023)\n")
        return subprocess.run(args, **kwargs)

    def commands(self, name):
        return [call for call in self.calls if call[0] == name]


# -- every setting --------------------------------------------------------------------------------------

def test_every_setting_is_written_where_debian_reads_it(root, write_config):
    path = write_config(FULL)
    report = apply(load_config(path), path, root=root)
    assert report.is_changed and not report.warnings

    assert (root / "etc/hostname").read_text() == "birdcam\n"
    assert "127.0.1.1\tbirdcam" in (root / "etc/hosts").read_text()
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Oslo"
    assert (root / "etc/timezone").read_text() == "Europe/Oslo\n"

    keyfile = root / "etc/NetworkManager/system-connections/appliance-wifi.nmconnection"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    text = keyfile.read_text()
    for line in ("[connection]", "type=wifi", "interface-name=wlan0", "autoconnect=true", "[wifi]", "ssid=IEEE",
                 "[wifi-security]", "key-mgmt=wpa-psk",
                 "psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e", "[ipv4]", "method=auto"):
        assert line in text.splitlines()
    assert "password" not in text  # the passphrase itself never reaches the root filesystem
    # The regulatory domain as raspi-config sets it; the radio unblocked at the next boot, in both places.
    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert cmdline.endswith(" rootwait cfg80211.ieee80211_regdom=NO\n") and cmdline.count("\n") == 1
    assert (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"
    assert "WirelessEnabled=true" in (root / "var/lib/NetworkManager/NetworkManager.state").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert not (wants / "wpa_supplicant@wlan0.service").exists()  # no second supplicant

    keys = root / "home/admin/.ssh/authorized_keys"
    assert keys.read_text() == f"{KEY_1}\n{KEY_2}\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert (keys.stat().st_uid, keys.stat().st_gid) == (ADMIN_UID, ADMIN_UID)
        assert keys.parent.stat().st_uid == ADMIN_UID
    assert os.readlink(wants / "ssh.service") == "/lib/systemd/system/ssh.service"

    assert is_hash_of("hunter2-console", shadow_hash(root))
    assert shadow_hash(root).startswith("$6$")
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o640
    assert (root / "etc/shadow").read_text().startswith("root:*:19700:0:99999:7:::\n")


def test_the_wifi_key_is_the_one_wpa_passphrase_derives():
    # IEEE 802.11i-2004, annex H.4.1
    assert wpa_psk("password", "IEEE") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert wpa_psk("ThisIsAPassword", "ThisIsASSID") == "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
    assert wpa_psk("AB" * 32, "anything") == "ab" * 32  # 64 hex digits are the key itself


def test_an_open_network_has_no_key_and_an_awkward_ssid_is_written_as_its_bytes(root, write_config):
    path = write_config('[system]\nwifi_country = "gb"\nwifi_ssid = "Café \\"Wi-Fi\\""\n')
    apply(load_config(path), path, root=root)
    text = (root / "etc/NetworkManager/system-connections/appliance-wifi.nmconnection").read_text()
    assert "[wifi-security]" not in text and "psk=" not in text
    assert "ssid=" + "".join(f"{b};" for b in 'Café "Wi-Fi"'.encode()) in text.splitlines()
    assert (root / "boot/firmware/cmdline.txt").read_text().split()[-1] == "cfg80211.ieee80211_regdom=GB"


def test_the_hotspot_keyfile_is_root_only_wpa2_with_the_derived_key_and_the_fixed_address(root, write_config):
    path = write_config('[system]\nhostname = "birdcam"\nwifi_country = "NO"\nhotspot_passphrase = "correct horse"\n')
    report = apply(load_config(path), path, root=root)
    keyfile = root / "etc/NetworkManager/system-connections/appliance-hotspot.nmconnection"
    assert keyfile.stat().st_mode & 0o777 == 0o600
    text = keyfile.read_text()
    assert "correct horse" not in text + repr(report)
    # The key wpa_passphrase derives from the passphrase and the network's name, the hostname.
    key = wpa_psk("correct horse", "birdcam")
    for line in ("mode=ap", "ssid=birdcam", "key-mgmt=wpa-psk", "proto=rsn", "pairwise=ccmp", f"psk={key}",
                 "method=shared", "address1=10.42.0.1/24", "autoconnect=false", "id=appliance-hotspot"):
        assert line in text.splitlines(), line
    # The radio: the country set, and unblocked (no Wi-Fi network needed for that).
    assert (root / "boot/firmware/cmdline.txt").read_text().split()[-1] == "cfg80211.ieee80211_regdom=NO"
    assert (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"
    assert "WirelessEnabled=true" in (root / "var/lib/NetworkManager/NetworkManager.state").read_text()
    apply(load_config(write_config('[system]\nhostname = "birdcam"\n')), path, root=root)
    assert not keyfile.exists()


def test_nm_ssid_keeps_plain_names_and_writes_the_bytes_of_anything_a_keyfile_could_misread():
    assert nm_ssid("IEEE") == "IEEE" and nm_ssid("my home wifi") == "my home wifi"
    for awkward in (" leading", "trailing ", "semi;colon", "back\\slash", "#hash", "Café", "tab\there"):
        assert nm_ssid(awkward) == "".join(f"{b};" for b in awkward.encode()), awkward


def test_a_country_change_replaces_the_regulatory_domain_and_an_appliance_before_networkmanager_is_cleaned(
        root, write_config):
    (root / "etc/wpa_supplicant").mkdir(parents=True)
    (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").write_text("network={}\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "wpa_supplicant@wlan0.service").symlink_to("/lib/systemd/system/wpa_supplicant@.service")
    apply(load_config(write_config(FULL)), None, root=root)
    assert not (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").exists()
    assert not (wants / "wpa_supplicant@wlan0.service").is_symlink()
    apply(load_config(write_config(FULL.replace('wifi_country = "NO"', 'wifi_country = "SE"'))), None, root=root)
    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert "regdom=SE" in cmdline and "regdom=NO" not in cmdline and cmdline.count("regdom") == 1
    assert not apply(load_config(write_config(FULL.replace('wifi_country = "NO"', 'wifi_country = "SE"'))),
                     None, root=root).is_changed


def test_the_127_0_1_1_line_is_replaced_or_added_and_other_lines_kept():
    stock = "127.0.0.1\tlocalhost\n# a comment\n127.0.1.1\traspberrypi\n10.0.0.5\tnas\n127.0.1.1\tother\n"
    assert hosts_with_hostname(stock, "birdcam") == "127.0.0.1\tlocalhost\n# a comment\n127.0.1.1\tbirdcam\n10.0.0.5\tnas\n"
    assert hosts_with_hostname("127.0.0.1\tlocalhost\n", "birdcam") == "127.0.0.1\tlocalhost\n127.0.1.1\tbirdcam\n"


# -- turning things off ---------------------------------------------------------------------------------

def test_without_ssh_keys_ssh_is_off_its_link_and_the_keys_file_removed(root, write_config):
    path = write_config(FULL)
    apply(load_config(path), path, root=root)
    path = write_config('[system]\nhostname = "birdcam"\n')
    report = apply(load_config(path), path, root=root)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert not (wants / "ssh.service").is_symlink()
    assert not (root / "home/admin/.ssh/authorized_keys").exists()
    assert not (root / "etc/NetworkManager/system-connections/appliance-wifi.nmconnection").exists()
    assert "etc/systemd/system/multi-user.target.wants/ssh.service: removed" in report.changed
    assert is_hash_of("hunter2-console", shadow_hash(root))  # no password set: left alone


def test_missing_host_keys_are_generated_by_ssh_keygen(root, write_config):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    (root / "etc/ssh/ssh_host_ed25519_key").unlink()
    path = write_config(f'[system]\nssh_authorized_keys = "{KEY_1}"\n')
    report = apply(load_config(path), path, root=root)
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")
    assert "SSH host keys generated" in report.changed


# -- passwords ------------------------------------------------------------------------------------------

def test_clear_text_passwords_leave_the_config_file_and_its_comments_stay(root, write_config, caplog):
    path = write_config(FULL)
    caplog.set_level(logging.DEBUG)
    report = apply(load_config(path), path, root=root)
    text = path.read_text()
    assert "hunter2-console" not in text and "s3cret-page" not in text
    assert "# my camera" in text and "# the console login" in text and "# the page password" in text
    assert "port = 8080" in text and f"{KEY_2}\n" in text

    config = load_config(path)
    assert config.system.admin_password == "" and config.system.admin_password_hash == shadow_hash(root)
    assert config.web.password == "" and check_password_hash(config.web.password_hash, "s3cret-page")
    for secret in ("hunter2-console", "s3cret-page", shadow_hash(root),
                   "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"):
        assert secret not in caplog.text and secret not in "\n".join(report.changed)


def test_a_hash_in_the_config_is_copied_into_shadow_as_it_is(root, write_config):
    password_hash = openssl_passwd("from-mkpasswd")
    path = write_config(f'[system]\nadmin_password_hash = "{password_hash}"\n')
    apply(load_config(path), path, root=root)
    assert shadow_hash(root) == password_hash


def test_a_missing_admin_user_is_an_error_naming_passwd_and_the_fix(root, write_config):
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = write_config('[system]\nadmin_password = "hunter2-console"\n')
    with pytest.raises(SystemSettingsError) as error:
        apply(load_config(path), path, root=root)
    message = str(error.value)
    assert str(root / "etc/passwd") in message and "system.admin_password" in message and "adduser admin" in message
    assert "hunter2" not in message and "hunter2-console" in path.read_text()  # kept, to try again


# -- idempotence ----------------------------------------------------------------------------------------

def test_a_second_apply_changes_nothing(root, write_config):
    path = write_config(FULL)
    first = apply(load_config(path), path, root=root)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    second = apply(load_config(path), path, root=root)
    assert first.is_changed and not second.is_changed and second.changed == []
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files


def test_a_clear_text_password_left_in_the_file_keeps_the_hash_already_in_shadow(root, write_config):
    config = load_config(write_config('[system]\nadmin_password = "hunter2-console"\n'))
    apply(config, None, root=root)  # no file to rewrite, as with a read-only boot partition
    before = shadow_hash(root)
    assert not apply(config, None, root=root).is_changed
    assert shadow_hash(root) == before


# -- the first boot -------------------------------------------------------------------------------------

def test_the_first_boot_grows_the_root_partition_and_then_its_filesystem(root, write_config):
    path, card = write_config(FULL), Card()
    report = apply(load_config(path), path, root=root, first_boot=True, run=card)
    assert card.commands("findmnt") == [["findmnt", "-no", "SOURCE", "--mountpoint", str(root / "var/lib/appliance")],
                                        ["findmnt", "-no", "SOURCE", str(root)]]
    assert card.commands("growpart") == [["growpart", "/dev/mmcblk0", "2"]]
    assert card.commands("resize2fs") == [["resize2fs", "/dev/mmcblk0p2"]]
    assert [call[0] for call in card.calls] == ["findmnt", "findmnt", "growpart", "resize2fs"]
    assert "root partition grown: /dev/mmcblk0 partition 2" in report.changed
    assert "root filesystem resized: /dev/mmcblk0p2" in report.changed


def test_with_a_data_partition_the_first_boot_grows_it_and_leaves_the_root_alone(root, write_config):
    path, card = write_config(FULL), Card(data_partition=True)
    report = apply(load_config(path), path, root=root, first_boot=True, run=card)
    assert card.commands("growpart") == [["growpart", "/dev/mmcblk0", "3"]]
    assert card.commands("resize2fs") == [["resize2fs", "/dev/mmcblk0p3"]]
    assert "data partition grown: /dev/mmcblk0 partition 3" in report.changed
    assert not [c for c in report.changed if c.startswith("root ")]


def test_the_first_boot_record_says_what_was_applied_and_holds_no_secret(root, write_config):
    path = write_config(FULL)
    apply(load_config(path), path, root=root, first_boot=True, run=Card())
    text = (root / FIRST_BOOT_RECORD).read_text()
    record = json.loads(text)
    assert record["version"] and record["time_utc"].endswith("Z")
    assert record["settings"] == {"hostname": "birdcam", "timezone": "Europe/Oslo",
                                  "wifi": {"ssid": "IEEE", "country": "NO", "is_open": False}, "hotspot": None,
                                  "ssh_keys": 2, "is_admin_password_set": True}
    assert "etc/hostname" in record["changed"]
    for secret in ("hunter2", "s3cret", '"password"', "f42c6fc5", "$6$", "pbkdf2", "scrypt"):
        assert secret not in text


def test_a_second_first_boot_finds_nothing_to_grow_and_keeps_the_first_record(root, write_config):
    path, card = write_config(FULL), Card()
    apply(load_config(path), path, root=root, first_boot=True, run=card)
    record = (root / FIRST_BOOT_RECORD).read_bytes()
    again = apply(load_config(path), path, root=root, first_boot=True, run=card)
    assert not again.is_changed and not again.warnings
    assert len(card.commands("growpart")) == 2 and len(card.commands("resize2fs")) == 2
    assert (root / FIRST_BOOT_RECORD).read_bytes() == record


def test_a_failing_growpart_is_an_error_and_no_record_is_written(root, write_config):
    def run(args, **kwargs):
        if args[0] == "findmnt":
            return subprocess.CompletedProcess(args, 0, "/dev/mmcblk0p2\n", "")
        return subprocess.CompletedProcess(args, 2, "", "FAILED: disk=/dev/mmcblk0 partition=2: failed to get lock\n")
    path = write_config("")
    with pytest.raises(SystemSettingsError, match=r"`growpart /dev/mmcblk0 2` failed \(exit 2\): FAILED"):
        apply(load_config(path), path, root=root, first_boot=True, run=run)
    assert not (root / FIRST_BOOT_RECORD).exists()  # so the next boot tries again


# -- errors ---------------------------------------------------------------------------------------------

def test_a_time_zone_missing_from_zoneinfo_is_an_error_naming_the_file_and_key(root, write_config):
    path = write_config('[system]\ntimezone = "Mars/Olympus_Mons"\n')
    with pytest.raises(SystemSettingsError) as error:
        apply(load_config(path), path, root=root)
    message = str(error.value)
    assert str(root / "usr/share/zoneinfo/Mars/Olympus_Mons") in message and "system.timezone" in message
    assert "timedatectl list-timezones" in message


def test_a_path_that_cannot_be_written_is_an_error_naming_it(root, write_config):
    (root / "etc/hostname").unlink()
    (root / "etc/hostname").mkdir()
    path = write_config("")
    with pytest.raises(SystemSettingsError, match=rf"{root / 'etc/hostname'}: cannot be written \(.*\): run this as root"):
        apply(load_config(path), path, root=root)


@pytest.mark.parametrize("text, key, allowed", [
    ('hostname = "-cam"', "system.hostname", "letters, digits and '-'"),
    ('hostname = "bird_cam"', "system.hostname", "letters, digits and '-'"),
    (f'hostname = "{"a" * 64}"', "system.hostname", "1 to 63"),
    ('timezone = "../../etc/passwd"', "system.timezone", "a tz database name"),
    ('timezone = "Europe/"', "system.timezone", "a tz database name"),
    ('wifi_country = "NOR"\nwifi_ssid = "x"', "system.wifi_country", "two-letter ISO 3166"),
    ('wifi_ssid = "home"', "system.wifi_country", "two-letter ISO 3166"),
    (f'wifi_country = "NO"\nwifi_ssid = "{"x" * 33}"', "system.wifi_ssid", "1 to 32 bytes"),
    ('wifi_country = "NO"\nwifi_ssid = "home"\nwifi_passphrase = "short"', "system.wifi_passphrase", "8 to 63 printable"),
    ('wifi_passphrase = "long enough"', "system.wifi_passphrase", "set wifi_ssid too"),
    ('ssh_authorized_keys = "ssh-dss AAAAB3NzaC1kc3MAAACBAP me"', "system.ssh_authorized_keys", "ssh-ed25519, ssh-rsa"),
    (f'ssh_authorized_keys = "{KEY_1[:40]}"', "system.ssh_authorized_keys", "ssh-ed25519, ssh-rsa"),
    ('admin_password = "two\\nlines"', "system.admin_password", "without control characters"),
    ('admin_password_hash = "plain:text"', "system.admin_password_hash", "crypt(3) hash"),
    ("hostname = 7", "system.hostname", "letters, digits"),
])
def test_a_bad_system_value_is_rejected_naming_file_key_and_what_is_allowed(write_config, text, key, allowed):
    path = write_config(f"[system]\n{text}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: ") and allowed in message


def test_errors_about_secrets_never_echo_them(write_config):
    for text in ('wifi_country = "NO"\nwifi_ssid = "home"\nwifi_passphrase = "tiny"',
                 "admin_password = 12345678", 'admin_password_hash = "tiny"'):
        with pytest.raises(ConfigError) as error:
            load_config(write_config(f"[system]\n{text}\n"))
        assert "tiny" not in str(error.value) and "12345678" not in str(error.value)


def test_names_are_normalised_and_multi_line_keys_survive_config_show(write_config):
    config = load_config(write_config(FULL.replace('"birdcam"', '"BirdCam"').replace('"NO"', '"no"')))
    assert config.system.hostname == "birdcam" and config.system.wifi_country == "NO"
    assert config.system.ssh_keys == [KEY_1, KEY_2]
    assert load_config(write_config(to_toml(config))) == config


# -- the command ----------------------------------------------------------------------------------------

def test_the_command_applies_the_config_and_then_has_nothing_to_change(root, write_config, capsys):
    path = write_config('[system]\nhostname = "birdcam"\ntimezone = "Europe/Oslo"\n')
    assert main(["system", "apply", "--config", str(path), "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("change(s)")
    assert (root / "etc/hostname").read_text() == "birdcam\n"
    assert main(["system", "apply", "--config", str(path), "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: [system] applied to {root}: nothing to change"


def test_the_command_names_the_problem_in_one_line(root, write_config, capsys):
    path = write_config('[system]\ntimezone = "Mars/Olympus_Mons"\n')
    assert main(["system", "apply", "--config", str(path), "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("appliance: error: ") and "system.timezone" in err and "\n" not in err


# -- the read-only root ---------------------------------------------------------------------------------

PI_CMDLINE = "console=tty0 root=PARTUUID=27b57ed2-02 rw fsck.repair=yes net.ifnames=0 cma=64M rootwait \n"


def test_the_read_only_root_is_one_token_added_to_cmdline_and_removed_again(tmp_path):
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text(PI_CMDLINE)
    assert set_read_only_root(True, cmdline) is True
    assert cmdline.read_text() == PI_CMDLINE.strip().replace(" rw ", " ro ") + " overlayroot=tmpfs:recurse=0\n"
    assert set_read_only_root(True, cmdline) is False
    assert set_read_only_root(False, cmdline) is True
    assert cmdline.read_text().split() == PI_CMDLINE.split()


def test_a_cmdline_without_root_is_not_touched(tmp_path):
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=tty0\n")
    with pytest.raises(SystemSettingsError, match=r"cmdline.txt: no root= in it"):
        set_read_only_root(True, cmdline)
    assert cmdline.read_text() == "console=tty0\n"


def test_the_read_only_root_command_says_what_happens_next(tmp_path, capsys):
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text(PI_CMDLINE)
    assert main(["system", "read-only-root", "--enable", "--cmdline", str(cmdline)]) == 0
    assert "the root filesystem is read-only from the next boot" in capsys.readouterr().out
    assert "overlayroot=tmpfs:recurse=0" in cmdline.read_text()
