"""The units, udev rules, tmpfiles and sysusers in systemd/: checked by systemd's own tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".socket"))
HOST_UNITS = Path("/lib/systemd/system")
APPLIANCE = Path(shutil.which("appliance") or REPO / ".venv/bin/appliance")

needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze") or not HOST_UNITS.is_dir(),
                                           reason="systemd-analyze and /lib/systemd/system are not on this machine")


@pytest.fixture
def unit_root(tmp_path):
    """A root laid out like the image: the host's systemd units, ours, and the appliance's command."""
    shutil.copytree(HOST_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    system = tmp_path / "etc/systemd/system"
    system.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD / name, system / name)
    shutil.copy(system / "appliance-offload@.service", system / "appliance-offload@sda1.service")
    command = tmp_path / "opt/appliance/venv/bin/appliance"
    command.parent.mkdir(parents=True)
    shutil.copy(APPLIANCE, command)
    return tmp_path


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", unit],
                          capture_output=True, text=True, timeout=60)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [u.replace("@.", "@sda1.") for u in UNITS])
def test_each_unit_passes_systemd_analyze_verify_without_a_warning(unit_root, unit):
    result = verify(unit_root, unit)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


@needs_systemd_analyze
def test_verify_would_catch_a_bad_directive_and_a_missing_command(unit_root):
    unit = unit_root / "etc/systemd/system/appliance.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    assert "Failed to parse service type" in verify(unit_root, "appliance.service").stderr
    (unit_root / "opt/appliance/venv/bin/appliance").unlink()
    assert verify(unit_root, "appliance-web.service").returncode != 0


def test_the_loop_and_page_are_hardened_and_run_as_the_service_user():
    for name in ("appliance.service", "appliance-web.service"):
        text = (SYSTEMD / name).read_text()
        for directive in ("User=appliance", "ProtectSystem=strict", "ReadWritePaths=/var/lib/appliance /run/appliance",
                          "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n"):
            assert directive in text, f"{name} lacks {directive!r}"
    loop = (SYSTEMD / "appliance.service").read_text()
    assert "Type=notify" in loop and "WatchdogSec=" in loop and "Restart=on-failure" in loop


def service_settings(unit: str) -> dict[str, str]:
    """The ``[Service]`` section's ``Key=value`` lines (the last of a key wins, as in systemd)."""
    settings, section = {}, None
    for line in (SYSTEMD / unit).read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def test_the_camera_loop_outranks_the_page_for_cpu_io_and_nice():
    loop, page = service_settings("appliance.service"), service_settings("appliance-web.service")
    for key in ("CPUWeight", "IOWeight", "Nice"):
        assert key in loop and key in page, f"{key}= must be set on both units"
    assert int(loop["CPUWeight"]) > int(page["CPUWeight"]) and int(loop["IOWeight"]) > int(page["IOWeight"])
    assert int(loop["Nice"]) < int(page["Nice"])


def test_the_cpu_weights_give_the_services_the_shares_their_nice_values_give_two_processes():
    """Across two services (two cgroups) only CPUWeight= counts; across two processes in one group
    (the page-load benchmark on one machine) only nice does: each nice step is a factor of 1.25."""
    loop, page = service_settings("appliance.service"), service_settings("appliance-web.service")
    by_weight = int(loop["CPUWeight"]) / int(page["CPUWeight"])
    by_nice = 1.25 ** (int(page["Nice"]) - int(loop["Nice"]))
    assert abs(by_weight / by_nice - 1) < 0.1, (by_weight, by_nice)


def test_the_page_load_benchmark_runs_at_the_units_nice_values():
    from appliance.bench.page_load import LOOP_NICE, PAGE_NICE

    assert LOOP_NICE == int(service_settings("appliance.service")["Nice"])
    assert PAGE_NICE == int(service_settings("appliance-web.service")["Nice"])


def test_the_page_listens_on_port_80_through_socket_activation():
    socket = (SYSTEMD / "appliance-web.socket").read_text()
    assert "ListenStream=80\n" in socket
    assert "Requires=appliance-web.socket" in (SYSTEMD / "appliance-web.service").read_text()


def udevadm_test(rules: dict[str, str]) -> str:
    """Parse rules with udev's own parser, in a private mount namespace (nothing reaches the host's udev)."""
    script = "mount -t tmpfs tmpfs /run && mkdir -p /run/udev/rules.d && "
    for name in rules:
        script += f"cp {name} /run/udev/rules.d/ && "
    script += "udevadm test --action=add /sys/class/net/lo 2>&1"
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=rules and Path(next(iter(rules.values()))).parent).stdout


needs_root_udevadm = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("udevadm") or not shutil.which("unshare"),
                                        reason="parsing udev rules in a private mount namespace needs root, udevadm and unshare")


@needs_root_udevadm
@pytest.mark.parametrize("rules", ["99-appliance-offload.rules", "60-appliance-gpio.rules"])
def test_udev_rules_parse_without_an_error(rules):
    output = udevadm_test({rules: str(SYSTEMD / rules)})
    assert f"Reading rules file: /run/udev/rules.d/{rules}" in output
    # The gpio group exists on the image (sysusers), not necessarily on the machine running the tests.
    problems = [line for line in output.splitlines()
                if rules in line and "Reading rules file" not in line and "Unknown group 'gpio'" not in line]
    assert not problems, "\n".join(problems)


@needs_root_udevadm
def test_the_udev_check_would_catch_a_bad_rule(tmp_path):
    bad = tmp_path / "98-bad.rules"
    bad.write_text('ACTION=="add", BOGUS="x", ENV{SYSTEMD_WANTS}+="x.service"\n')
    assert "98-bad.rules:1 Invalid key 'BOGUS'" in udevadm_test({bad.name: str(bad)})


def test_the_offload_rule_asks_systemd_for_the_unit_and_never_mounts():
    rule = (SYSTEMD / "99-appliance-offload.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="appliance-offload@%k.service"' in rule
    assert 'ENV{ID_FS_TYPE}=="vfat|exfat|ext4"' in rule and 'ENV{ID_BUS}=="usb"' in rule
    assert "RUN" not in rule and "mount" not in rule.split("# ")[0]


def test_tmpfiles_and_sysusers_give_the_service_user_its_places():
    tmpfiles = (SYSTEMD / "appliance.tmpfiles").read_text()
    assert "d /run/appliance                0770 appliance appliance -" in tmpfiles
    sysusers = (SYSTEMD / "appliance.sysusers").read_text()
    assert "m appliance video" in sysusers and "m appliance gpio" in sysusers


def test_the_links_service_stops_on_a_config_error_instead_of_restarting_in_a_loop(tmp_path):
    config = tmp_path / "appliance.toml"
    config.write_text('[mqtt]\nurl = "http://broker.local"\n')
    result = subprocess.run([str(APPLIANCE), "links", "--config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{config}: mqtt.url" in result.stderr
    settings = service_settings("appliance-links.service")
    assert settings["Restart"] == "on-failure" and settings["RestartPreventExitStatus"] == "2"
