"""The models catalog: the real catalog against the real model files, and fetch/verify on real folders.

Downloads go to a real HTTP server on 127.0.0.1 serving ../shared/models/coral; nothing here touches
the internet.
"""

import contextlib
import functools
import http.server
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from ai_edge_litert.interpreter import Interpreter

from appliance.config import KeepConfig
from appliance.errors import CatalogError, ModelError
from appliance.inference import catalog, model_files
from appliance.inference.catalog import (Catalog, KeepDefaults, default_catalog_path, default_models_dir,
                                         keep_defaults, load_catalog)
from appliance.inference.model_files import fetch, verify
from appliance.storage.files import sha256_file

CORAL = Path(__file__).resolve().parents[2] / "shared/models/coral"
TF = Path(__file__).resolve().parents[2] / "shared/models/tf"
REPO = Path(__file__).resolve().parents[1]
TINY = "mobilenet_v1_0.25_128_quant.tflite"
TINY_SHA = "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785"
TINY_TPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
TINY_TPU_SHA = "a4cb1e493346542248687939fbd7421ab92d74c58b1f0a0018b8f1bdddfcef7e"
SSD = "ssd_mobilenet_v1_1.0_coco_quant.tflite"
SSD_SHA = "db0d6d44276d75de47bc949e3a416e5ea93795aa72b15c59f121dc5db93a6f7f"  # ../shared/README.md's
COCO_LABELS = "coco_labels.txt"
TF_HOSTED = "https://storage.googleapis.com/download.tensorflow.org/models/tflite"  # the catalog's detector's home
TF_ARCHIVE = "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves CORAL; /broken/* answers 500, /truncated/* sends half a file and hangs up; notes paths in ``seen``."""

    def __init__(self, *args, seen=None, **kwargs):
        self.seen = seen  # before the base class's __init__, which handles the request
        super().__init__(*args, **kwargs)

    def do_GET(self):
        if self.seen is not None:
            self.seen.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/broken/"):
            self.send_error(500, "Internal Server Error")
        elif self.path.startswith("/truncated/"):
            data = (CORAL / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(directory, seen=None):
    """A real HTTP server on 127.0.0.1 serving ``directory`` with ``_Handler``; yields its address.

    Each path asked for is appended to ``seen``, when given.
    """
    handler = functools.partial(_Handler, directory=str(directory), seen=seen)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server():
    with serving(CORAL) as address:
        yield address


def write_catalog(path, url_base, sha256=TINY_SHA, edgetpu=True):
    """A one-model catalog whose URLs point at ``url_base``."""
    text = f'''
default = "tiny"
[[models]]
name = "tiny"
filename = "{TINY}"
url = "{url_base}/{TINY}"
sha256 = "{sha256}"
input_size = [128, 128]
licence = "Apache-2.0"
labels_description = "ImageNet"
keep = {{ labels = ["*"], ignore = ["background"], min_score = 0.5 }}
'''
    if edgetpu:
        text += f'''[models.edgetpu]
filename = "{TINY_TPU}"
url = "{url_base}/{TINY_TPU}"
sha256 = "{TINY_TPU_SHA}"
'''
    path.write_text(text)
    return load_catalog(path)


def test_the_default_catalog_is_the_repositorys_models_catalog():
    assert default_catalog_path() == REPO / "models/catalog.toml"
    assert load_catalog().source == str(REPO / "models/catalog.toml")


def test_the_default_model_is_the_inat_bird_model():
    assert load_catalog().default.filename == "mobilenet_v2_1.0_224_inat_bird_quant.tflite"


def shared_folder(entry):
    return TF if entry.kind == catalog.DETECTOR else CORAL


def test_every_catalog_sha256_matches_the_shared_model_file():
    checked = 0
    for entry in load_catalog().entries:
        for file in entry.files(edgetpu=True):
            assert sha256_file(shared_folder(entry) / file.filename) == file.sha256, file.filename
            if entry.kind == catalog.CLASSIFIER:
                assert file.url == f"https://github.com/google-coral/test_data/raw/master/{file.filename}"
            checked += 1
    assert checked == 8  # five classifiers, the one pinned Edge TPU build, the detector and its labels file


def test_every_catalog_input_size_matches_the_models_input_tensor():
    for entry in load_catalog().entries:
        model = str(shared_folder(entry) / entry.filename)
        _, height, width, _ = Interpreter(model_path=model).get_input_details()[0]["shape"]
        assert entry.input_size == (width, height), entry.name


def test_the_detector_is_pinned_by_its_canonical_archive_with_its_licence_kind_and_labels_file():
    known = load_catalog()
    ssd = known.get("coco-ssd")
    assert (ssd.kind, ssd.keep, ssd.licence, ssd.input_size) == ("detector", None, "Apache-2.0", (300, 300))
    assert ssd.url == ("https://storage.googleapis.com/download.tensorflow.org/models/tflite/"
                       "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip")
    assert (ssd.member, ssd.sha256, ssd.filename) == ("detect.tflite", SSD_SHA, SSD)
    # The labels are made from the labelmap.txt in the same archive; the sha256 is of what is made.
    assert (ssd.labels.filename, ssd.labels.url, ssd.labels.member, ssd.labels.format) == \
        (COCO_LABELS, ssd.url, "labelmap.txt", "labelmap")
    assert {entry.kind for entry in known.entries if entry is not ssd} == {"classifier"}


def test_the_detector_given_as_the_classifier_gets_no_keep_rule_but_an_error():
    with pytest.raises(ModelError, match=rf"{SSD}: is the object detector coco-ssd, not an image classifier: "
                                         "set model.path to a classifier"):
        keep_defaults(load_catalog().get("coco-ssd"), KeepConfig(), TF / SSD, "appliance.toml")


def test_the_inat_models_keep_anything_but_background_at_half_confidence():
    known = load_catalog()
    for name in ("inat-bird", "inat-insect"):
        assert known.get(name).keep == KeepDefaults(labels=("*",), ignore=("background",), min_score=0.5)
        assert known.get(name).licence == "Apache-2.0"


def test_asking_for_an_unknown_model_lists_the_known_names():
    with pytest.raises(CatalogError, match=r"no model named 'narwhal', known: inat-bird, inat-insect, imagenet"):
        load_catalog().get("narwhal")


def test_a_model_file_is_recognised_by_its_sha256_and_an_edgetpu_build_by_its_own():
    known = load_catalog()
    assert known.find_by_sha256(sha256_file(CORAL / "mobilenet_v2_1.0_224_inat_bird_quant.tflite")).name == "inat-bird"
    assert known.find_by_sha256(TINY_SHA.upper()).name == "imagenet-tiny"
    assert known.find_by_sha256(TINY_TPU_SHA) is None
    assert known.find_by_edgetpu_sha256(TINY_TPU_SHA).name == "imagenet-tiny"
    assert known.find_by_edgetpu_sha256(TINY_SHA) is None


@pytest.mark.parametrize("old, new, message", [
    ('default = "tiny"', 'default = "nope"', r"default: 'nope' is not a classifier here, allowed: tiny"),
    ('name = "tiny"', 'name = "tiny"\nkind = "segmenter"', r"models\[0\] \(tiny\): kind: 'segmenter' is not "
                                                          r"classifier or detector"),
    ('name = "tiny"', 'name = "tiny"\nkind = "detector"', r"models\[0\] \(tiny\): unknown key 'keep', allowed: "),
    ('name = "tiny"', 'name = "tiny"\nmember = ""', r"models\[0\] \(tiny\): member: '' is not the name of the file "
                                                   r"inside the zip archive at url"),
    ('sha256 = "', 'sha256 = "xyz', r"models\[0\] \(tiny\): sha256: 'xyz.*' is not 64 lowercase hex digits"),
    ("licence =", "licenses =", r"models\[0\] \(tiny\): unknown key 'licenses', allowed: name, filename"),
    ("[128, 128]", "[128]", r"models\[0\] \(tiny\): input_size: \[128\] is not \[width, height\] in pixels"),
    ("min_score = 0.5", "min_score = 2", r"models\[0\] \(tiny\): keep: min_score: 2 is not a number from 0 to 1"),
    ('labels_description = "ImageNet"', "", r"models\[0\] \(tiny\): missing key 'labels_description'"),
    ('name = "tiny"', 'name = "all"', r"models\[0\] \(all\): name: 'all' is not lowercase letters"),
    (f'filename = "{TINY_TPU}"', 'filename = "../x.tflite"',
     r"models\[0\] \(tiny\): edgetpu: filename: '../x.tflite' is not a NAME.tflite file name"),
])
def test_a_malformed_catalog_is_an_error_naming_the_file_and_the_entry(tmp_path, old, new, message):
    path = tmp_path / "catalog.toml"
    write_catalog(path, "http://example.invalid")
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(CatalogError, match=rf"^{path}: {message}"):
        load_catalog(path)


def test_two_entries_with_one_name_are_an_error(tmp_path):
    path = tmp_path / "catalog.toml"
    write_catalog(path, "http://example.invalid", edgetpu=False)
    text = path.read_text()
    path.write_text(text + text[text.index("[[models]]"):].replace(TINY, "other.tflite"))
    with pytest.raises(CatalogError, match=r"models: name 'tiny' is used by two entries"):
        load_catalog(path)


def test_a_catalog_that_is_not_toml_is_an_error_naming_it(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text("default = \n")
    with pytest.raises(CatalogError, match=rf"^{path}: not valid TOML"):
        load_catalog(path)


def test_a_missing_catalog_is_an_error_naming_it(tmp_path):
    with pytest.raises(CatalogError, match=r"absent\.toml: the catalog cannot be read"):
        load_catalog(tmp_path / "absent.toml")


def test_the_models_dir_is_the_environment_variable_when_set(tmp_path):
    env = {"APPLIANCE_MODELS_DIR": str(tmp_path / "mine"), "XDG_DATA_HOME": "/xdg"}
    assert default_models_dir(env, device_dir=tmp_path) == tmp_path / "mine"


def test_the_models_dir_is_the_devices_folder_when_it_exists(tmp_path):
    assert default_models_dir({"XDG_DATA_HOME": "/xdg"}, device_dir=tmp_path) == tmp_path


def test_the_models_dir_falls_back_to_the_users_data_folder(tmp_path):
    absent = tmp_path / "absent"
    assert default_models_dir({"XDG_DATA_HOME": "/xdg"}, absent) == Path("/xdg/appliance/models")
    assert default_models_dir({"HOME": "/home/pi"}, absent) == Path("/home/pi/.local/share/appliance/models")
    assert default_models_dir({"HOME": "/home/pi", "XDG_DATA_HOME": "relative"}, absent) == \
        Path("/home/pi/.local/share/appliance/models")


def test_a_download_is_installed_with_progress_when_its_sha256_matches(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", server).get("tiny")
    calls = []
    results = fetch(tiny, tmp_path / "models", progress=lambda *a: calls.append(a))
    installed = tmp_path / "models" / TINY
    assert [(r.path, r.was_present) for r in results] == [(installed, False)]
    assert sha256_file(installed) == TINY_SHA
    size = (CORAL / TINY).stat().st_size
    assert calls[-1] == (TINY, size, size)
    assert all(done <= size and total == size for _, done, total in calls)


def test_the_edgetpu_build_is_downloaded_too_when_asked(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", server).get("tiny")
    results = fetch(tiny, tmp_path, edgetpu=True)
    assert [r.path.name for r in results] == [TINY, TINY_TPU]
    assert sha256_file(tmp_path / TINY_TPU) == TINY_TPU_SHA


def test_a_file_already_present_with_the_right_sha256_is_skipped(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", server).get("tiny")
    fetch(tiny, tmp_path)
    before = (tmp_path / TINY).stat().st_ino
    assert [r.was_present for r in fetch(tiny, tmp_path)] == [True]
    assert (tmp_path / TINY).stat().st_ino == before


def test_a_present_file_with_the_wrong_sha256_is_replaced(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", server).get("tiny")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / TINY).write_bytes(b"corrupt")
    assert [r.was_present for r in fetch(tiny, tmp_path / "models")] == [False]
    assert sha256_file(tmp_path / "models" / TINY) == TINY_SHA


def test_a_download_with_the_wrong_sha256_installs_nothing_and_says_expected_and_got(tmp_path, server):
    wrong = "0" * 64
    tiny = write_catalog(tmp_path / "catalog.toml", server, sha256=wrong).get("tiny")
    models = tmp_path / "models"
    with pytest.raises(CatalogError) as caught:
        fetch(tiny, models)
    assert str(caught.value) == (f"{server}/{TINY}: sha256 mismatch for {TINY}: expected {wrong}, "
                                 f"got {TINY_SHA}; nothing was installed")
    assert list(models.iterdir()) == []  # neither the model nor a temporary file


def test_a_server_error_is_a_clear_error_and_installs_nothing(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", f"{server}/broken").get("tiny")
    with pytest.raises(CatalogError, match=rf"^{server}/broken/{TINY}: download failed: HTTP 500"):
        fetch(tiny, tmp_path / "models")
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_a_truncated_download_is_a_clear_error_and_leaves_no_temporary_file(tmp_path, server):
    tiny = write_catalog(tmp_path / "catalog.toml", f"{server}/truncated").get("tiny")
    size = (CORAL / TINY).stat().st_size
    with pytest.raises(CatalogError, match=rf"truncated: got {size // 2} of {size} bytes; nothing was installed"):
        fetch(tiny, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_server_that_is_not_there_is_a_clear_error_that_suggests_from_dir(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tiny = write_catalog(tmp_path / "catalog.toml", f"http://127.0.0.1:{port}").get("tiny")
    with pytest.raises(CatalogError, match=r"cannot download \(.*refused.*\); .* --from DIR"):
        fetch(tiny, tmp_path / "models")


def test_fetch_from_a_folder_copies_and_checks_both_builds(tmp_path):
    tiny = load_catalog().get("imagenet-tiny")
    results = fetch(tiny, tmp_path, from_dir=CORAL, edgetpu=True)
    assert [(r.path.name, r.was_present) for r in results] == [(TINY, False), (TINY_TPU, False)]
    assert sha256_file(tmp_path / TINY) == TINY_SHA and sha256_file(tmp_path / TINY_TPU) == TINY_TPU_SHA


def test_fetch_from_a_folder_with_a_corrupt_copy_installs_nothing(tmp_path):
    usb = tmp_path / "usb"
    usb.mkdir()
    data = bytearray((CORAL / TINY).read_bytes())
    data[1000] ^= 0xFF
    (usb / TINY).write_bytes(bytes(data))
    with pytest.raises(CatalogError, match=rf"^{usb / TINY}: sha256 mismatch for {TINY}: expected {TINY_SHA}, got "):
        fetch(load_catalog().get("imagenet-tiny"), tmp_path / "models", from_dir=usb)
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_from_a_folder_without_the_file_names_what_is_missing(tmp_path):
    with pytest.raises(CatalogError, match=rf"{tmp_path / TINY}: cannot copy {TINY} from here"):
        fetch(load_catalog().get("imagenet-tiny"), tmp_path / "models", from_dir=tmp_path)


def test_verify_reports_ok_mismatch_and_missing(tmp_path):
    shutil.copy(CORAL / TINY, tmp_path)
    shutil.copy(CORAL / "mobilenet_v2_1.0_224_quant.tflite", tmp_path)
    with open(tmp_path / "mobilenet_v2_1.0_224_quant.tflite", "r+b") as f:
        f.seek(5000)
        f.write(b"\0\0\0\0")
    results = {r.file.filename: r for r in verify(tmp_path)}
    assert results[TINY].status == model_files.OK
    assert results["mobilenet_v2_1.0_224_quant.tflite"].status == model_files.MISMATCH
    assert results["mobilenet_v2_1.0_224_quant.tflite"].actual_sha256 == \
        sha256_file(tmp_path / "mobilenet_v2_1.0_224_quant.tflite")
    assert results[TINY_TPU].status == model_files.MISSING
    assert results["mobilenet_v2_1.0_224_inat_bird_quant.tflite"].status == model_files.MISSING
    assert results[COCO_LABELS].status == model_files.MISSING
    assert len(results) == 8


def test_verify_uses_the_catalog_it_is_given(tmp_path):
    mine = write_catalog(tmp_path / "catalog.toml", "http://example.invalid", edgetpu=False)
    assert isinstance(mine, Catalog)
    assert [(r.entry.name, r.status) for r in verify(tmp_path, mine)] == [("tiny", model_files.MISSING)]


# --- a detector: published in a zip archive, with a labels file of its own ---------------------------------

def write_detector_catalog(path, url_base, labels_url=True, member="detect.tflite", archive="coco.zip"):
    """The one-model catalog with a detector after it, whose URLs point at ``url_base``."""
    write_catalog(path, url_base, edgetpu=False)
    address = f'url = "{url_base}/{COCO_LABELS}", ' if labels_url else ""
    path.write_text(path.read_text() + f'''
[[models]]
name = "ssd"
kind = "detector"
filename = "{SSD}"
url = "{url_base}/{archive}"
member = "{member}"
sha256 = "{SSD_SHA}"
input_size = [300, 300]
licence = "Apache-2.0"
labels_description = "COCO"
labels = {{ filename = "{COCO_LABELS}", {address}sha256 = "{sha256_file(TF / COCO_LABELS)}" }}
''')
    return load_catalog(path)


@pytest.fixture
def archive_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the detector as published: in a zip archive (and one cut short)."""
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "coco.zip", "w") as archive:
        archive.write(TF / SSD, "detect.tflite")
        archive.writestr("labelmap.txt", "???\nperson\n")
    data = (www / "coco.zip").read_bytes()
    (www / "cut.zip").write_bytes(data[: len(data) // 2])
    shutil.copy(TF / COCO_LABELS, www)
    with serving(www) as address:
        yield address


def test_a_model_published_in_a_zip_archive_is_downloaded_and_only_its_member_installed(tmp_path, archive_server):
    ssd = write_detector_catalog(tmp_path / "catalog.toml", archive_server).get("ssd")
    calls = []
    results = fetch(ssd, tmp_path / "models", progress=lambda *a: calls.append(a))
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, False), (COCO_LABELS, False)]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [COCO_LABELS, SSD]  # no archive left over
    assert sha256_file(tmp_path / "models" / SSD) == SSD_SHA
    archive_size = (tmp_path / "www" / "coco.zip").stat().st_size
    assert (SSD, archive_size, archive_size) in calls


@pytest.mark.parametrize("member, archive, message", [
    ("model.tflite", "coco.zip", "coco.zip: the archive holds no model.tflite; nothing was installed"),
    ("detect.tflite", "cut.zip", r"cut.zip: not a whole zip archive \(\d+ bytes\); nothing was installed"),
])
def test_an_archive_without_the_member_or_cut_short_installs_nothing(tmp_path, archive_server, member, archive,
                                                                     message):
    ssd = write_detector_catalog(tmp_path / "catalog.toml", archive_server, member=member, archive=archive).get("ssd")
    with pytest.raises(CatalogError, match=rf"^{archive_server}/{message}$"):
        fetch(ssd, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_labels_file_with_no_pinned_address_is_copied_from_a_folder_only(tmp_path, archive_server):
    ssd = write_detector_catalog(tmp_path / "catalog.toml", archive_server, labels_url=False).get("ssd")
    models = tmp_path / "models"
    with pytest.raises(CatalogError, match=rf"^{COCO_LABELS}: the catalog pins no download address for it, only "
                                           r"its sha256: copy it to a folder and run `appliance models fetch ssd "
                                           r"--from DIR`"):
        fetch(ssd, models)
    assert [p.name for p in models.iterdir()] == [SSD]  # the model itself was downloaded and checked
    results = fetch(ssd, models, from_dir=TF)
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, True), (COCO_LABELS, False)]


def test_the_catalogs_detector_is_fetched_from_the_shared_folder_and_verified(tmp_path):
    results = fetch(load_catalog().get("coco-ssd"), tmp_path, from_dir=TF)
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, False), (COCO_LABELS, False)]
    statuses = {r.file.filename: r.status for r in verify(tmp_path)}
    assert statuses[SSD] == statuses[COCO_LABELS] == model_files.OK


def test_a_default_that_names_a_detector_is_an_error(tmp_path):
    path = tmp_path / "catalog.toml"
    write_detector_catalog(path, "http://example.invalid")
    path.write_text(path.read_text().replace('default = "tiny"', 'default = "ssd"'))
    with pytest.raises(CatalogError, match=r"default: 'ssd' is not a classifier here, allowed: tiny$"):
        load_catalog(path)


# --- the catalog's detector as TensorFlow publishes it: model and labelmap.txt in one zip archive ----------

def labelmap_of(labels: str) -> str:
    """TensorFlow's labelmap.txt for "ID name" labels: line i names id i, "???" where no label has that id."""
    names = {int(number): name for number, name in (line.split(" ", 1) for line in labels.splitlines())}
    return "".join(names.get(i, "???") + "\n" for i in range(max(names) + 1))


def catalog_served_from(path, address):
    """The repository's catalog written to ``path`` with TensorFlow's hosted models at ``address`` instead."""
    text = (REPO / "models/catalog.toml").read_text()
    assert text.count(TF_HOSTED) == 2  # the detector's archive, for the model and for its labels
    path.write_text(text.replace(TF_HOSTED, address))
    return load_catalog(path)


@pytest.fixture
def tf_hosted(tmp_path):
    """A real HTTP server on 127.0.0.1 standing in for TensorFlow's: the detector's archive, holding the model
    and a labelmap.txt made from ../shared's coco_labels.txt; under /renamed/ the same with "bird" renamed.

    Yields the address and the list of paths the server was asked for.
    """
    labelmap = labelmap_of((TF / COCO_LABELS).read_text())
    for folder, text in (("", labelmap), ("renamed", labelmap.replace("\nbird\n", "\nduck\n"))):
        (tmp_path / "tf" / folder).mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(tmp_path / "tf" / folder / TF_ARCHIVE, "w") as archive:
            archive.write(TF / SSD, "detect.tflite")
            archive.writestr("labelmap.txt", text)
    seen = []
    with serving(tmp_path / "tf", seen) as address:
        yield address, seen


def test_the_labelmap_made_here_is_tensorflows_layout():
    lines = labelmap_of((TF / COCO_LABELS).read_text()).splitlines()
    assert (len(lines), lines[0], lines[1], lines[16], lines[90]) == (91, "???", "person", "bird", "toothbrush")
    assert [i for i, name in enumerate(lines) if name == "???"] == [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_a_labelmap_becomes_id_name_lines_without_the_unused_ids():
    assert model_files.labels_from_labelmap(b"???\nperson\nbicycle\n???\nmotorcycle\n") == \
        b"1 person\n2 bicycle\n4 motorcycle"
    assert model_files.labels_from_labelmap(b"\xef\xbb\xbf???\r\nperson \r\n\r\ncar\r\n") == b"1 person\n3 car"


def test_the_catalogs_detector_is_downloaded_once_with_its_labels_made_from_the_archives_labelmap(tmp_path,
                                                                                                  tf_hosted):
    address, seen = tf_hosted
    ssd = catalog_served_from(tmp_path / "catalog.toml", address).get("coco-ssd")
    models = tmp_path / "models"
    results = fetch(ssd, models)
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, False), (COCO_LABELS, False)]
    assert seen == [f"/{TF_ARCHIVE}"]  # one download for both members
    assert (models / COCO_LABELS).read_bytes() == (TF / COCO_LABELS).read_bytes()
    assert sorted(p.name for p in models.iterdir()) == [COCO_LABELS, SSD]  # no archive or temporary file left
    assert {r.file.filename: r.status for r in verify(models)}[COCO_LABELS] == model_files.OK
    (models / COCO_LABELS).unlink()
    results = fetch(ssd, models)  # the model is there: the archive is downloaded for the labels alone
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, True), (COCO_LABELS, False)]
    assert (models / COCO_LABELS).read_bytes() == (TF / COCO_LABELS).read_bytes()


def test_a_labelmap_unlike_the_pinned_one_installs_no_labels_and_names_the_way_out(tmp_path, tf_hosted):
    address, _ = tf_hosted
    ssd = catalog_served_from(tmp_path / "catalog.toml", f"{address}/renamed").get("coco-ssd")
    models = tmp_path / "models"
    with pytest.raises(CatalogError) as caught:
        fetch(ssd, models)
    assert str(caught.value).startswith(f"{address}/renamed/{TF_ARCHIVE}!labelmap.txt: sha256 mismatch for "
                                        f"{COCO_LABELS} made from it (labelmap): expected {ssd.labels.sha256}, got ")
    assert str(caught.value).endswith(f"; {COCO_LABELS} was not installed: the file it is made from is not the one "
                                      f"the catalog was pinned against; copy a {COCO_LABELS} to a folder and run "
                                      "`appliance models fetch coco-ssd --from DIR`")
    assert [p.name for p in models.iterdir()] == [SSD]  # the model checks out on its own, and stays
    usb = tmp_path / "usb"
    usb.mkdir()
    shutil.copy(TF / COCO_LABELS, usb)  # the way out: the labels file alone, already converted
    results = fetch(ssd, models, from_dir=usb)
    assert [(r.path.name, r.was_present) for r in results] == [(SSD, True), (COCO_LABELS, False)]


@pytest.mark.parametrize("old, new, message", [
    ('format = "labelmap"', 'format = "csv"',
     r"models\[5\] \(coco-ssd\): labels: format: 'csv' is not 'labelmap' \(the only conversion known\)"),
    (f'url = "{TF_HOSTED}/{TF_ARCHIVE}"\nmember = "labelmap.txt"', "",
     r"models\[5\] \(coco-ssd\): labels: format: converts a download, but no url is given"),
])
def test_a_labels_format_that_is_unknown_or_has_nothing_to_convert_is_an_error(tmp_path, old, new, message):
    path = tmp_path / "catalog.toml"
    text = (REPO / "models/catalog.toml").read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(CatalogError, match=rf"^{path}: {message}$"):
        load_catalog(path)
