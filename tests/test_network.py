"""The camera's own hotspot: the state machine (a fake NetworkManager and clock), the nmcli adapter
(nmcli's own output, answered at the adapter boundary), the service's files and the config's
checks (its keyfile: test_system.py). On a booted image with simulated radios
(mac80211_hwsim) it is tested by image/test-boot.sh."""

from __future__ import annotations

import subprocess
import threading

import pytest

from appliance.config import Config, load_config
from appliance.errors import ConfigError, NetworkError
from appliance.network import HOTSPOT_ADDRESS, HOTSPOT_ID, WIFI_ID
from appliance.network.hotspot import SETTLE_S, Hotspot, HotspotSettings, Seen
from appliance.network.nm import NetworkManager, split_terse
from appliance.network.service import read_network, read_request, request_hotspot, run


class FakeNetwork:
    """NetworkManager as the state machine sees it: what is up, and a log of what it was told."""

    def __init__(self, uplink=None, joins=False, opens=True):
        self.uplink, self.is_hotspot_up, self.clients = uplink, False, 0
        self.joins, self.opens = joins, opens
        self.calls = []

    def seen(self):
        return Seen(self.uplink, self.is_hotspot_up, self.clients if self.is_hotspot_up else 0)

    def open_hotspot(self):
        self.calls.append("open")
        if not self.opens:
            raise NetworkError("No suitable device found for this connection")
        self.is_hotspot_up = True

    def close_hotspot(self):
        self.calls.append("close")
        self.is_hotspot_up = False

    def join_wifi(self, timeout_s):
        self.calls.append("join")
        if not self.joins:
            raise NetworkError("Activation failed: the network is not there")
        self.uplink = WIFI_ID


SETTINGS = HotspotSettings(is_configured=True, has_wifi=True, after_s=45.0, retry_s=300.0)


def steps(hotspot, start_s, end_s, every_s=5.0, request=None):
    """Step from ``start_s`` to ``end_s``; the modes seen, in order, without repeats."""
    modes, now_s = [], start_s
    while now_s <= end_s:
        mode = hotspot.step(now_s, request)
        if not modes or modes[-1] != mode:
            modes.append(mode)
        now_s += every_s
    return modes


def test_with_no_network_the_hotspot_opens_after_the_set_time_and_not_before():
    network = FakeNetwork()
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    assert steps(hotspot, 0.0, 40.0) == ["waiting"]
    assert network.calls == []
    assert hotspot.step(45.0) == "hotspot"
    assert network.calls == ["open"]
    assert hotspot.status()["mode"] == "hotspot"


def test_the_set_time_counts_from_boot_not_from_the_services_start():
    # A service that starts 30 s after boot opens the hotspot 45 s after boot, not 75 s.
    network = FakeNetwork()
    hotspot = Hotspot(SETTINGS, network, now_s=30.0, down_since_s=0.0)
    assert steps(hotspot, 30.0, 44.0) == ["waiting"]
    assert hotspot.step(45.0) == "hotspot"


def test_a_slow_boot_still_gives_networkmanager_the_settle_time_after_the_service_starts():
    # Started 90 s after boot (an emulated or very slow boot): nothing opens for SETTLE_S.
    network = FakeNetwork()
    hotspot = Hotspot(SETTINGS, network, now_s=90.0, down_since_s=0.0)
    assert steps(hotspot, 90.0, 90.0 + SETTLE_S - 1) == ["waiting"]
    assert network.calls == []
    assert hotspot.step(90.0 + SETTLE_S) == "hotspot"


def test_a_network_that_comes_up_in_time_means_no_hotspot_at_all():
    network = FakeNetwork()
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    hotspot.step(20.0)
    network.uplink = "Wired connection 1"
    assert steps(hotspot, 25.0, 600.0) == ["connected"]
    assert network.calls == []
    assert hotspot.status()["uplink"] == "Wired connection 1"


def test_a_network_lost_later_opens_the_hotspot_after_the_set_time_again():
    network = FakeNetwork(uplink=WIFI_ID)
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    assert steps(hotspot, 0.0, 100.0) == ["connected"]
    network.uplink = None  # the home Wi-Fi went down at 100 s
    assert steps(hotspot, 105.0, 140.0) == ["waiting"]
    assert hotspot.step(150.0) == "hotspot"


def test_the_open_hotspot_tries_the_wifi_again_every_retry_and_reopens_when_it_fails():
    network = FakeNetwork(joins=False)
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    steps(hotspot, 0.0, 45.0)  # opened at 45 s
    assert steps(hotspot, 50.0, 340.0) == ["hotspot"]
    assert network.calls == ["open"]
    assert hotspot.step(345.0) == "hotspot"  # 300 s after it opened: closed, tried, reopened
    assert network.calls == ["open", "close", "join", "open"]
    network.joins = True
    assert steps(hotspot, 350.0, 640.0) == ["hotspot"]
    assert hotspot.step(645.0) == "connected"
    assert network.calls[-2:] == ["close", "join"] and not network.is_hotspot_up
    assert steps(hotspot, 650.0, 2000.0) == ["connected"]


def test_no_retry_while_a_device_is_on_the_hotspot():
    network = FakeNetwork(joins=True)
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    steps(hotspot, 0.0, 45.0)
    network.clients = 1  # someone is looking at the page
    assert steps(hotspot, 50.0, 1000.0) == ["hotspot"]
    assert network.calls == ["open"]
    network.clients = 0
    assert hotspot.step(1005.0) == "connected"


def test_a_cable_plugged_in_while_the_hotspot_is_open_closes_it():
    network = FakeNetwork()
    hotspot = Hotspot(HotspotSettings(is_configured=True, has_wifi=False), network, now_s=0.0)
    steps(hotspot, 0.0, 45.0)
    assert network.is_hotspot_up
    assert steps(hotspot, 50.0, 2000.0) == ["hotspot"]  # no Wi-Fi configured: nothing to retry
    network.uplink = "Wired connection 1"
    assert hotspot.step(2005.0) == "connected"
    assert network.calls == ["open", "close"]


def test_the_owner_opens_it_at_once_keeps_it_closed_or_lets_it_decide():
    network = FakeNetwork(uplink=WIFI_ID)
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    assert hotspot.step(1.0, "on") == "hotspot"  # a network is up, but the owner asked
    assert steps(hotspot, 5.0, 2000.0, request="on") == ["hotspot"]
    assert network.calls == ["open"]  # no retries, no closing, while the owner wants it open
    assert hotspot.step(2005.0, "auto") == "connected"
    assert network.calls == ["open", "close"]
    network.uplink = None
    assert steps(hotspot, 2010.0, 3000.0, request="off") == ["offline"]
    assert network.calls == ["open", "close"]
    with pytest.raises(ValueError, match="use one of auto, on, off"):
        hotspot.step(3005.0, "sometimes")


def test_without_a_passphrase_there_is_no_hotspot():
    network = FakeNetwork()
    hotspot = Hotspot(HotspotSettings(is_configured=False, has_wifi=True), network, now_s=0.0)
    assert steps(hotspot, 0.0, 1000.0) == ["offline"]
    assert network.calls == []


def test_a_hotspot_that_cannot_open_is_a_problem_shown_and_tried_again_after_the_retry_time():
    network = FakeNetwork(opens=False)
    hotspot = Hotspot(SETTINGS, network, now_s=0.0)
    assert steps(hotspot, 0.0, 340.0) == ["waiting", "offline"]
    assert network.calls == ["open"]  # once, not every step
    assert hotspot.status()["problem"] == "cannot open the hotspot: No suitable device found for this connection"
    network.opens = True
    assert hotspot.step(345.0) == "hotspot"
    assert hotspot.status()["problem"] is None


# -- nmcli --------------------------------------------------------------------------------------------

class Nmcli:
    """Answers for nmcli and iw as they print (terse output), and records each command."""

    def __init__(self, active="", stations="", fail=None):
        self.active, self.stations, self.fail = active, stations, fail
        self.commands = []

    def __call__(self, argv, **kwargs):
        self.commands.append(argv)
        assert kwargs.get("timeout"), "every command has a timeout"
        if self.fail and self.fail[0] == argv[:len(self.fail[0])]:
            return subprocess.CompletedProcess(argv, self.fail[1], "", self.fail[2])
        if argv[0] == "iw":
            return subprocess.CompletedProcess(argv, 0, self.stations, "")
        if argv[-1] == "--active":
            return subprocess.CompletedProcess(argv, 0, self.active, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_nmcli_terse_fields_are_split_where_they_are_not_escaped():
    assert split_terse(r"My\:Net\\work:802-11-wireless:wlan0:activated") == \
        ["My:Net\\work", "802-11-wireless", "wlan0", "activated"]
    assert split_terse("lo:loopback:lo:activated") == ["lo", "loopback", "lo", "activated"]


def test_what_is_up_is_read_from_the_active_connections():
    nmcli = Nmcli(active="lo:loopback:lo:activated\n"
                         f"{HOTSPOT_ID}:802-11-wireless:wlan0:activated\n"
                         "Wired connection 1:802-3-ethernet:eth0:activating\n",
                  stations="Station 02:00:00:00:01:00 (on wlan0)\n\tinactive time:\t10 ms\nStation 02:00:00:00:02:00 (on wlan0)\n")
    assert NetworkManager(nmcli).seen() == Seen(uplink=None, is_hotspot_up=True, clients=2)
    nmcli.active = "Wired connection 1:802-3-ethernet:eth0:activated\nlo:loopback:lo:activated\n"
    assert NetworkManager(nmcli).seen() == Seen(uplink="Wired connection 1", is_hotspot_up=False, clients=0)


def test_opening_closing_and_joining_are_nmcli_connection_up_and_down():
    nmcli = Nmcli()
    network = NetworkManager(nmcli)
    network.open_hotspot()
    network.close_hotspot()
    network.join_wifi(30)
    assert nmcli.commands == [["nmcli", "--wait", "30", "connection", "up", "id", HOTSPOT_ID],
                              ["nmcli", "connection", "down", "id", HOTSPOT_ID],
                              ["nmcli", "--wait", "30", "connection", "up", "id", WIFI_ID]]


def test_nmcli_failures_are_network_errors_in_nmclis_own_words():
    nmcli = Nmcli(fail=(["nmcli", "--wait"], 4, "Error: Connection activation failed: No suitable device found.\n"))
    with pytest.raises(NetworkError, match="^Error: Connection activation failed: No suitable device found.$"):
        NetworkManager(nmcli).open_hotspot()
    closing = Nmcli(fail=(["nmcli", "connection", "down"], 10, "Error: 'appliance-hotspot' is not an active connection.\n"))
    NetworkManager(closing).close_hotspot()  # already closed: fine

    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])
    with pytest.raises(NetworkError, match="nmcli is not installed"):
        NetworkManager(missing).seen()


# -- the service's files ------------------------------------------------------------------------------

def test_the_service_follows_the_request_file_and_writes_what_it_does(tmp_path):
    system = Config().system.__class__(hostname="birdcam", wifi_country="NO", hotspot_passphrase="correct horse")
    network = FakeNetwork(uplink="Wired connection 1")
    stop = threading.Event()
    clock = iter(range(0, 10_000, 5))
    request_hotspot(tmp_path, "on")
    real_step = Hotspot.step
    seen_modes = []

    def step_and_stop(self, now_s, request=None):
        mode = real_step(self, now_s, request)
        seen_modes.append(mode)
        if len(seen_modes) == 3:
            stop.set()
        return mode

    Hotspot.step = step_and_stop
    try:
        run(system, tmp_path, network, stop, step_s=0.0, clock=lambda: float(next(clock)))
    finally:
        Hotspot.step = real_step
    assert seen_modes == ["hotspot"] * 3 and network.calls == ["open"]
    status = read_network(tmp_path)
    assert status["mode"] == "hotspot" and status["request"] == "on"
    assert status["hotspot"] == {"ssid": "birdcam", "address": HOTSPOT_ADDRESS, "url": f"http://{HOTSPOT_ADDRESS}/"}
    assert (tmp_path / "network-request").stat().st_mode & 0o777 == 0o664


def test_a_request_file_with_anything_else_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "network-request").write_text("maybe\n")
    assert read_request(tmp_path) is None
    assert "'maybe' is not one of auto, on, off" in caplog.text
    assert read_request(tmp_path / "missing") is None
    with pytest.raises(ValueError):
        request_hotspot(tmp_path, "maybe")


# -- the config ----------------------------------------------------------------------

def write_config(tmp_path, text):
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, problem", [
    ('[system]\nwifi_country = "NO"\nhotspot_passphrase = "short"\n', "system.hotspot_passphrase", "not a WPA passphrase"),
    ('[system]\nhotspot_passphrase = "correct horse"\n', "system.wifi_country", "required when system.hotspot_passphrase is set"),
    ('[system]\nhotspot_after_s = 5\n', "system.hotspot_after_s", ""),
])
def test_a_hotspot_setting_wpa2_or_the_radio_cannot_take_is_refused_naming_the_key(tmp_path, text, key, problem):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key in str(error.value) and problem in str(error.value) and str(path) in str(error.value)
    assert "short" not in str(error.value).replace("shorter", "")  # a secret is never echoed
