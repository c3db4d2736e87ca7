"""`appliance models list | fetch | verify`, run through the real command line on real folders."""

import shutil
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.cli import models as models_cli
from appliance.storage.files import sha256_file
from test_catalog import catalog_served_from, tf_hosted  # noqa: F401 (a fixture)

CORAL = Path(__file__).resolve().parents[2] / "shared/models/coral"
TF = Path(__file__).resolve().parents[2] / "shared/models/tf"
SSD = "ssd_mobilenet_v1_1.0_coco_quant.tflite"
TINY = "mobilenet_v1_0.25_128_quant.tflite"
TINY_TPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
BIRD = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"


def test_every_models_command_has_a_summary_and_an_example():
    for func in (models_cli.models, models_cli.models_list, models_cli.models_fetch, models_cli.models_verify):
        doc = func.__doc__.strip()
        assert doc.splitlines()[0].endswith("."), func.__name__
        assert "appliance models" in doc.split("Example", 1)[1], func.__name__


def test_help_of_fetch_shows_its_docstring_and_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["models", "fetch", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "install it only if its sha256 matches" in out
    assert "appliance models fetch all --from /media/usb/models --edgetpu" in out
    for option in ("--from DIR", "--dir MODELS_DIR", "--edgetpu"):
        assert option in out


def test_models_alone_prints_its_help_and_fails(capsys):
    assert main(["models"]) == 2
    assert "list" in capsys.readouterr().out


def test_list_shows_every_model_marks_the_default_and_what_is_installed(tmp_path, capsys):
    shutil.copy(CORAL / BIRD, tmp_path)
    assert main(["models", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in out.splitlines()[2:]}
    assert sorted(lines) == ["coco-ssd", "imagenet", "imagenet-tf2", "imagenet-tiny", "inat-bird", "inat-insect"]
    assert lines["inat-bird"].startswith("*") and " classifier " in lines["inat-bird"]
    assert BIRD in lines["inat-bird"] and "224x224" in lines["inat-bird"]
    assert "* except background, score >= 0.5" in lines["inat-bird"]
    assert lines["inat-bird"].endswith("yes")
    assert lines["imagenet"].endswith("no") and "score >= 0.8" in lines["imagenet"]
    assert lines["imagenet-tiny"].endswith("no, Edge TPU build no") and "128x128" in lines["imagenet-tiny"]
    assert f"Models folder: {tmp_path}" in out
    assert lines["coco-ssd"].split()[:3] == ["coco-ssd", "detector", SSD]
    assert "300x300  -  " in lines["coco-ssd"] and lines["coco-ssd"].endswith("no, labels no")


def test_list_uses_the_models_dir_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path))
    assert main(["models", "list"]) == 0
    assert f"Models folder: {tmp_path}" in capsys.readouterr().out


def test_fetch_from_a_folder_installs_the_model_and_its_edgetpu_build(tmp_path, capsys):
    assert main(["models", "fetch", "imagenet-tiny", "--from", str(CORAL), "--dir", str(tmp_path), "--edgetpu"]) == 0
    out = capsys.readouterr().out
    assert f"imagenet-tiny: {tmp_path / TINY}: installed, sha256 ok" in out
    assert f"imagenet-tiny: {tmp_path / TINY_TPU}: installed, sha256 ok" in out
    assert sha256_file(tmp_path / TINY) == sha256_file(CORAL / TINY)


def test_fetch_of_the_detector_from_a_folder_installs_it_and_its_labels_file(tmp_path, capsys):
    assert main(["models", "fetch", "coco-ssd", "--from", str(TF), "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"coco-ssd: {tmp_path / SSD}: installed, sha256 ok",
                                                    f"coco-ssd: {tmp_path / 'coco_labels.txt'}: installed, sha256 ok"]
    assert main(["models", "list", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("yes, labels yes")


def test_fetch_of_the_detector_downloads_it_and_makes_its_labels_from_the_archive(tmp_path, tf_hosted, capsys):
    catalog = tmp_path / "catalog.toml"
    catalog_served_from(catalog, tf_hosted[0])
    models = tmp_path / "models"
    assert main(["models", "fetch", "coco-ssd", "--catalog", str(catalog), "--dir", str(models)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"coco-ssd: {models / SSD}: installed, sha256 ok",
                                                    f"coco-ssd: {models / 'coco_labels.txt'}: installed, sha256 ok"]
    assert (models / "coco_labels.txt").read_bytes() == (TF / "coco_labels.txt").read_bytes()
    assert main(["models", "verify", "--catalog", str(catalog), "--dir", str(models)]) == 0


def test_fetch_of_the_detector_with_an_unexpected_labelmap_fails_naming_from_and_installs_no_labels(tmp_path,
                                                                                                    tf_hosted, capsys):
    catalog = tmp_path / "catalog.toml"
    catalog_served_from(catalog, f"{tf_hosted[0]}/renamed")
    models = tmp_path / "models"
    assert main(["models", "fetch", "coco-ssd", "--catalog", str(catalog), "--dir", str(models)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("appliance: error: ") and len(err.splitlines()) == 1
    assert "labelmap.txt: sha256 mismatch for coco_labels.txt" in err
    assert err.rstrip().endswith("run `appliance models fetch coco-ssd --from DIR`")
    assert [p.name for p in models.iterdir()] == [SSD]
    assert main(["models", "list", "--catalog", str(catalog), "--dir", str(models)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("yes, labels no")


def test_fetch_again_skips_and_says_so(tmp_path, capsys):
    args = ["models", "fetch", "imagenet-tiny", "--from", str(CORAL), "--dir", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 0
    assert capsys.readouterr().out.endswith(f"{tmp_path / TINY}: already present, sha256 ok; skipped\n")


def test_fetch_all_from_a_folder_installs_every_model_and_says_which_have_no_edgetpu_build(tmp_path, capsys):
    usb, models = tmp_path / "usb", tmp_path / "models"
    usb.mkdir()
    for path in [*CORAL.glob("*.tflite"), *TF.iterdir()]:  # a stick with every model on it
        (usb / path.name).symlink_to(path)
    assert main(["models", "fetch", "all", "--from", str(usb), "--dir", str(models), "--edgetpu"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in usb.iterdir())
    assert "inat-bird: no Edge TPU build is pinned in the catalog; fetching the CPU model only" in out
    assert "imagenet-tiny: no Edge TPU build" not in out


def test_fetch_with_progress_draws_a_bar_on_stderr(tmp_path, capsys):
    assert main(["models", "fetch", "imagenet-tiny", "--from", str(CORAL), "--dir", str(tmp_path), "--progress"]) == 0
    err = capsys.readouterr().err
    assert f"\r{TINY}: 100% 0.5/0.5 MB" in err and err.endswith("\n")


def test_fetch_without_a_terminal_draws_no_bar(tmp_path, capsys):
    assert main(["models", "fetch", "imagenet-tiny", "--from", str(CORAL), "--dir", str(tmp_path)]) == 0
    assert "%" not in capsys.readouterr().err


def test_fetch_of_an_unknown_model_fails_listing_the_names(tmp_path, capsys):
    assert main(["models", "fetch", "narwhal", "--from", str(CORAL), "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("appliance: error: ")
    assert "no model named 'narwhal', known: inat-bird, inat-insect, imagenet, imagenet-tf2, imagenet-tiny" in err


def test_fetch_of_a_corrupt_copy_fails_and_installs_nothing(tmp_path, capsys):
    usb, models = tmp_path / "usb", tmp_path / "models"
    usb.mkdir()
    data = (CORAL / TINY).read_bytes()
    (usb / TINY).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert main(["models", "fetch", "imagenet-tiny", "--from", str(usb), "--dir", str(models)]) == 2
    assert "sha256 mismatch for" in capsys.readouterr().err
    assert list(models.iterdir()) == []


def test_fetch_with_a_broken_catalog_fails_naming_it(tmp_path, capsys):
    broken = tmp_path / "catalog.toml"
    broken.write_text('default = "x"\n')
    assert main(["models", "fetch", "x", "--catalog", str(broken), "--dir", str(tmp_path)]) == 2
    assert f"appliance: error: {broken}: top level: missing key 'models'" in capsys.readouterr().err


def test_verify_passes_when_every_present_file_matches(tmp_path, capsys):
    shutil.copy(CORAL / TINY, tmp_path)
    assert main(["models", "verify", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("ok") and line.endswith(TINY) for line in out.splitlines())
    assert any(line.startswith("missing") and line.endswith(BIRD) for line in out.splitlines())


def test_verify_fails_on_a_corrupted_copy_and_shows_both_checksums(tmp_path, capsys):
    shutil.copy(CORAL / TINY, tmp_path)
    with open(tmp_path / TINY, "r+b") as f:
        f.seek(100)
        f.write(b"corrupt")
    assert main(["models", "verify", "--dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    line = next(line for line in captured.out.splitlines() if TINY in line)
    assert line.startswith("mismatch")
    assert f"expected {sha256_file(CORAL / TINY)}, got {sha256_file(tmp_path / TINY)}" in line
    assert "1 file(s)" in captured.err and "appliance models fetch" in captured.err


def test_verify_of_an_empty_folder_reports_everything_missing_and_passes(tmp_path, capsys):
    assert main(["models", "verify", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.startswith("missing") for line in lines)
