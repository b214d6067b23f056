"""The demo app against a hostile client and a careless operator: it reads only files its Gradio
server received, says the same thing about every other path, keeps nothing of an upload once it
stops, fails on a bad --rev with one message, never ranks NaNs, and says when it serves beyond
this machine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import requests
from app_fixtures import free_port, live_app, make_models
from gradio.utils import get_upload_folder
from PIL import Image

from skinlesion.serve import app, predictor, scratch
from skinlesion.acquire.demo_data import render_demo_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("project") / "models")


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    with live_app(models, tmp_path_factory.mktemp("examples")) as url:
        yield url


def call_predict(url: str, upload, opacity: float = 0.0, **kwargs) -> tuple[str, object, str]:
    """POST a raw payload to the public API, as curl would; (last event, its data, the whole stream)."""
    posted = requests.post(f"{url}gradio_api/call/predict", json={"data": [upload, False, opacity]},
                           timeout=60, **kwargs)
    posted.raise_for_status()
    stream = requests.get(f"{url}gradio_api/call/predict/{posted.json()['event_id']}", timeout=300,
                          **kwargs).text
    events = [(e.split("\n")[0].removeprefix("event: "), e.split("\n")[1].removeprefix("data: "))
              for e in stream.strip().split("\n\n") if not e.startswith("event: heartbeat")]
    event, data = events[-1]
    return event, json.loads(data), stream


def upload_raw(url: str, path: Path) -> str:
    """Gradio's own upload route, as the page uses it; returns the path it stored the file at."""
    with open(path, "rb") as f:
        response = requests.post(f"{url}gradio_api/upload", files=[("files", (path.name, f, "image/png"))], timeout=60)
    response.raise_for_status()
    return response.json()[0]


def noise_png(path: Path) -> Path:
    """A private photo: random pixels, which no overlay of anything else reproduces."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


# --- finding 1: the app read any file the server could read -----------------------------------

def test_predict_refuses_a_path_gradio_did_not_receive(server, tmp_path):
    secret = noise_png(tmp_path / "private_photo.png")
    not_an_image = tmp_path / "shadow"
    not_an_image.write_text("root:$6$salt$hash:19000:0:99999:7:::\n")
    gradio_folder = Path(get_upload_folder())
    planted = gradio_folder / "planted"  # inside Gradio's folder, yet not received: a symlink out
    planted.mkdir(exist_ok=True)
    (planted / "link.png").unlink(missing_ok=True)
    (planted / "link.png").symlink_to(secret)
    claims = [str(secret), str(tmp_path / "missing.png"), str(not_an_image),
              f"{gradio_folder}/planted/../../../../../../..{secret}", str(planted / "link.png")]

    answers: dict[str, list] = {"payload": [], "bare path": []}
    for claim in claims:
        for shape, payload in (("payload", {"path": claim}),
                               ("payload", {"path": claim, "orig_name": "x.png", "mime_type": "image/png"}),
                               ("bare path", claim)):  # Gradio's validation refuses a bare string
            event, data, stream = call_predict(server, payload)
            assert event == "error", (claim, stream[:300])  # no overlay: opacity 0 would show the photo itself
            assert claim not in stream and str(tmp_path) not in stream
            answers[shape].append(data)
    # Existing or missing, image or not: one answer, so a client learns nothing about the files.
    for same_shape in answers.values():
        assert all(a == same_shape[0] for a in same_shape), same_shape
    assert answers["payload"][0]["error"] == app.NOT_RECEIVED

    # With Gradio's meta, Gradio itself refuses, and its message does not reach the client either.
    event, data, stream = call_predict(server, {"path": str(secret), "meta": {"_type": "gradio.FileData"}})
    assert event == "error" and str(secret) not in stream
    (planted / "link.png").unlink()


def test_what_gradio_received_is_analysed_even_without_meta(server, tmp_path):
    """An upload through Gradio's own route, then a raw payload naming it: analysed."""
    lesion = tmp_path / "lesion.png"
    render_demo_image("mel", seed=3)[0].save(lesion)
    stored = upload_raw(server, lesion)
    event, data, _ = call_predict(server, {"path": stored})
    assert event == "complete" and len(data[4]) == 7
    # The bundled examples, as the page sends them when one is clicked: the paths in the config.
    config = requests.get(f"{server}config", timeout=30).json()
    samples = [c["props"]["samples"] for c in config["components"] if c["type"] == "dataset"][0]
    event, data, _ = call_predict(server, samples[0][0])
    assert event == "complete" and len(data[4]) == 7


def test_received_files_resolve_symlinks_and_dotdot(tmp_path):
    """Even a path in Gradio's records is read only if its real path stays in Gradio's folder."""
    folder, outside = tmp_path / "gradio", noise_png(tmp_path / "private.png")
    (folder / "abc").mkdir(parents=True)
    inside = noise_png(folder / "abc" / "upload.png")
    (folder / "abc" / "link.png").symlink_to(outside)
    claims = {str(inside), str(folder / "abc" / "link.png"), f"{folder}/abc/../../private.png", str(folder / "abc")}
    received = app.ReceivedFiles(folder, [claims])
    assert received.path_of({"path": str(inside)}) == inside.resolve()
    for claim in claims - {str(inside)}:
        with pytest.raises(gr.Error) as info:
            received.path_of({"path": claim})
        assert info.value.message == app.NOT_RECEIVED
    for payload in ({"path": str(outside)}, str(outside), {"path": None}, {"url": str(outside)}, 42):
        with pytest.raises(gr.Error):
            received.path_of(payload)


# --- finding 2: copies of uploads outlived the app -------------------------------------------

def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            if requests.get(f"{url}config", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`. Not folders: importing gradio creates an empty
    gradio/vibe_edit_history/ in the temp dir, before any code of ours runs."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.mark.slow
def test_no_upload_copy_survives_app_exit(models, tmp_path):
    """The real command, with its own empty temp dir: an upload, two overlays, SIGTERM; then the
    temp dir is empty (the old app left its overlays and examples, and Gradio its cache)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    lesion = tmp_path / "lesion.png"
    render_demo_image("nv", seed=4)[0].save(lesion)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("GRADIO_TEMP_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "skinlesion.serve", "--port", str(port)], cwd=models.parent,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(url, process)
        stored = upload_raw(url, lesion)
        for opacity in (0.0, 0.7):
            event, data, _ = call_predict(url, {"path": stored}, opacity=opacity)
            assert event == "complete"
            assert requests.get(f"{url}gradio_api/file={data[1]['path']}", timeout=30).ok  # the overlay
        held = files_under(temp)
        assert any(name.endswith(lesion.name) for name in held), held  # the upload is on disk meanwhile
        assert all(name.startswith(scratch.PREFIX) for name in held), held  # ... in the one folder
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert files_under(temp) == [] and not list(temp.glob(f"{scratch.PREFIX}*"))


SCRATCH_OWNER = """
import sys, time
from skinlesion.serve import scratch
scratch.exit_cleanly_on_signals()
print(scratch.folder(), flush=True)
(scratch.folder() / "gradio").mkdir()
(scratch.folder() / "gradio" / "upload.png").write_bytes(b"a patient's photo")
time.sleep(120)
"""


def start_scratch_owner(temp: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", SCRATCH_OWNER], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO)})
    folder = Path(process.stdout.readline().strip())
    for _ in range(100):  # until the file is written
        if (folder / "gradio" / "upload.png").exists():
            break
        time.sleep(0.05)
    return process, folder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_scratch_folder_is_removed_when_the_app_is_stopped(tmp_path, signum):
    process, folder = start_scratch_owner(tmp_path)
    assert folder.parent == tmp_path and (folder / "gradio" / "upload.png").exists()
    assert scratch.remove_abandoned(tmp_path) == []  # its owner is alive: left alone
    process.send_signal(signum)
    process.wait(timeout=30)
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_nohup_keeps_the_app_running_on_sighup(tmp_path):
    """A signal ignored by whoever started the app (nohup: SIGHUP) stays ignored."""
    process = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
                                "from skinlesion.serve import scratch\n"
                                "scratch.exit_cleanly_on_signals()\nprint('ready', flush=True)\ntime.sleep(60)"],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_folder_of_a_killed_app_is_removed_at_the_next_start(tmp_path):
    killed, abandoned = start_scratch_owner(tmp_path)
    alive, in_use = start_scratch_owner(tmp_path)
    being_created = tmp_path / f"{scratch.PREFIX}nomarker"  # mkdtemp done, marker not yet written
    being_created.mkdir()
    unrelated = tmp_path / "someone-else"
    unrelated.mkdir()
    try:
        killed.kill()  # SIGKILL: no handler, no atexit
        killed.wait()
        assert (abandoned / "gradio" / "upload.png").exists()
        assert scratch.remove_abandoned(tmp_path) == [abandoned]
        assert not abandoned.exists() and in_use.exists() and being_created.exists() and unrelated.exists()
    finally:
        alive.kill()
        alive.wait()


# --- finding 3: --rev failures were tracebacks -----------------------------------------------

def git(cwd: Path, *args: str) -> None:
    from pipeline_clone import env

    subprocess.run(["git", *args], cwd=cwd, env=env(), check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """A clone of a project whose commit tracks models/ with DVC: the weights are in the original's
    cache, not in the clone's (no `dvc pull` yet), as after `git clone` of the real project."""
    from dvc.repo import Repo

    origin = tmp_path_factory.mktemp("origin")
    git(origin, "init", "-q")
    Repo.init(str(origin)).close()
    (origin / "params.yaml").write_text("train: {epochs: 1}\n")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "no models yet")
    make_models(origin / "models", folds=(0,))
    with Repo(str(origin)) as repo:
        repo.add(str(origin / "models"))
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "models")
    clone = tmp_path_factory.mktemp("clone") / "project"
    git(origin.parent, "clone", "-q", str(origin), str(clone))
    return clone


def main_fails(argv: list[str], cwd: Path, monkeypatch, capsys) -> str:
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as info:
        app.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_rev_without_cached_models_says_dvc_pull(fresh_clone, monkeypatch, capsys):
    err = main_fails(["--rev", "HEAD"], fresh_clone, monkeypatch, capsys)
    assert "tracked by DVC but not in its cache" in err and "`dvc pull`" in err
    err = main_fails(["--rev", "HEAD~1"], fresh_clone, monkeypatch, capsys)  # a commit before models/
    assert "no trained weights in `models/` at HEAD~1" in err and "dvc pull" in err


@pytest.mark.parametrize("rev", ["HEAD:params.yaml", "HEAD^{tree}", "", " "])
def test_rev_naming_a_file_is_one_message(fresh_clone, monkeypatch, capsys, rev):
    err = main_fails(["--rev", rev], fresh_clone, monkeypatch, capsys)
    assert ("names a file or folder, not a commit" if rev.strip() else "--rev is empty") in err


# --- finding 4: a NaN model still named a diagnosis ------------------------------------------

def test_nan_model_is_never_ranked(models, tmp_path):
    """Weights that turn NaN after loading (the loader refuses NaN files; this is the app's own
    guard): no probabilities, no label, one message."""
    served = predictor.load_served_model(repo=models.parent)
    for member in served.ensemble.members:
        member.backbone.get_classifier().weight.data.fill_(float("nan"))
    lesion = tmp_path / "lesion.png"
    render_demo_image("mel", seed=1)[0].save(lesion)
    handlers = app.Handlers(predictor.Predictor(served), app.ReceivedFiles(tmp_path, [{str(lesion)}]), tmp_path / "o")
    for tta in (False, True):
        with pytest.raises(gr.Error) as info:
            handlers.analyse({"path": str(lesion)}, tta, 0.5)
        assert "invalid probabilities (not a number)" in info.value.message and "retrain" in info.value.message
    rgb = np.asarray(Image.open(lesion).convert("RGB").resize((64, 64)))
    for cam in (False, True):
        with pytest.raises(predictor.NonFiniteOutputError):
            handlers.predictor.predict(rgb, tta=False, cam=cam)


# --- finding 7: serving the network without a word; --auth ------------------------------------

@pytest.fixture
def fake_launch(models, monkeypatch):
    """main() up to the launch, with the model loaded and the launch recorded instead of run."""
    launched = []
    monkeypatch.setattr(app, "load_served_model", lambda rev: predictor.load_served_model(repo=models.parent))
    monkeypatch.setattr(app, "build_app", lambda served: "demo")
    monkeypatch.setattr(app, "launch", lambda demo, **kwargs: launched.append(kwargs))
    return launched


@pytest.mark.parametrize("argv, warned", [
    (["--host", "0.0.0.0"], True), (["--host", "::"], True), (["--share"], True),
    ([], False), (["--host", "localhost"], False), (["--host", "::1"], False),
])
def test_public_host_prints_warning(fake_launch, capsys, argv, warned):
    app.main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert len(fake_launch) == 1
    if warned:
        assert len(lines) == 1 and lines[0].startswith("warning: anyone ")
        assert "can use the app: it has no login (add --auth USER:PASS)" in lines[0]
    else:
        assert lines == []


def test_auth_flag(fake_launch, models, tmp_path, capsys):
    assert app.parse_args(["--auth", "alice:pass:with:colons"]).auth == ("alice", "pass:with:colons")
    for bad in ("alice", "alice:", ":secret", " :secret"):
        with pytest.raises(SystemExit) as info:
            app.parse_args(["--auth", bad])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "argument --auth: expected USER:PASS" in err
        assert "secret" not in err  # a mistyped password is not echoed
    app.main(["--host", "0.0.0.0", "--auth", "alice:LongPassphrase"])
    assert fake_launch[-1]["auth"] == ("alice", "LongPassphrase")
    assert "it asks for the --auth login" in capsys.readouterr().err


def test_auth_protects_the_live_api(models, tmp_path):
    from gradio_client import Client, handle_file

    lesion = tmp_path / "lesion.png"
    render_demo_image("bcc", seed=2)[0].save(lesion)
    with live_app(models, tmp_path / "examples", auth=("alice", "LongPassphrase")) as url:
        refused = requests.post(f"{url}gradio_api/call/predict", json={"data": [None, False, 0.0]}, timeout=30)
        assert refused.status_code == 401
        assert requests.post(f"{url}gradio_api/upload", files=[("files", ("x.png", b"x"))], timeout=30).status_code == 401
        client = Client(url, auth=("alice", "LongPassphrase"), verbose=False)
        assert len(client.predict(handle_file(str(lesion)), False, 0.5, api_name="/predict")[4]) == 7
