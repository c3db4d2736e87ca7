"""The command line: fast --help, and one clear line (not a traceback) for what a user can cause."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import BIRD_MODEL, IMAGES, REPO

from appliance.config import to_toml

APPLIANCE = [sys.executable, "-m", "appliance"]


def test_help_imports_neither_flask_nor_numpy(cli_env):
    code = ("import sys\nfrom appliance.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug', 'numpy', 'PIL', "
            "'sqlite_utils', 'gpiozero', 'waitress', 'ai_edge_litert'}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["run", "serve", "demo", "captures", "sync", "offload", "system apply",
                                     "bench", "bench-web", "bench-offload", "models list", "config check"])
def test_each_commands_help_imports_neither_flask_nor_numpy(command, cli_env):
    code = ("import sys\nfrom appliance.cli import main\ntry:\n    main(sys.argv[1:] + ['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'numpy', 'sqlite_utils'}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *command.split()], capture_output=True, text=True,
                            env=cli_env, check=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"


def _serve_config(make_config, tmp_path, **web):
    path = tmp_path / "appliance.toml"
    path.write_text(to_toml(make_config(web={"host": "127.0.0.1", **web})))
    return path


def _one_error_line(result):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("appliance: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_serve_on_a_port_in_use_says_so_in_one_line(make_config, tmp_path, cli_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _serve_config(make_config, tmp_path)
        result = subprocess.run([*APPLIANCE, "serve", "--config", str(config), "--port", str(port)],
                                capture_output=True, text=True, env=cli_env, timeout=60)
    assert f"port {port} is in use: pass --port" in _one_error_line(result)


def test_demo_on_a_port_in_use_also_offers_no_web(tmp_path, cli_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*APPLIANCE, "demo", "--images", str(IMAGES), "--data", str(tmp_path / "data"),
                                 "--port", str(port), "--once"], capture_output=True, text=True, env=cli_env,
                                timeout=60)
    line = _one_error_line(result)
    assert f"port {port} is in use" in line and "--no-web" in line


def test_serve_with_a_garbage_host_names_the_key(make_config, tmp_path, cli_env):
    config = _serve_config(make_config, tmp_path, host="no such host!", port=1)
    result = subprocess.run([*APPLIANCE, "serve", "--config", str(config)], capture_output=True, text=True,
                            env=cli_env, timeout=60)
    assert "web.host: 'no such host!' is not an address of this machine" in _one_error_line(result)


def test_a_reader_that_goes_away_ends_the_command_quietly(cli_env):
    # The pipe is closed before the command writes: its first write (or flush) meets EPIPE.
    process = subprocess.Popen([*APPLIANCE, "config", "show"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=cli_env, cwd=REPO)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_bench_over_photos_the_keep_rule_never_matches_names_the_option(tmp_path, cli_env):
    photos = tmp_path / "no-birds"
    photos.mkdir()
    (photos / "hot_dog.jpg").write_bytes((IMAGES / "hot_dog.jpg").read_bytes())
    result = subprocess.run([*APPLIANCE, "bench", "--model", str(BIRD_MODEL), "--images", str(photos),
                             "--frames", "10", "--no-rss"], capture_output=True, text=True, env=cli_env, timeout=300)
    assert "appliance bench: --images: " in _one_error_line(result)
    assert "0 photos the keep rule matches" in result.stderr
