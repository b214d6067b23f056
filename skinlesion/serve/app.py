"""The demo app: upload a dermoscopic image, get the top-3 diagnoses and where the model looked.

    python -m skinlesion.serve                      # the workspace's models/, http://127.0.0.1:7860
    python -m skinlesion.serve --rev HEAD~1         # the weights DVC tracked at a commit
    python -m skinlesion.serve --rev my-experiment  # ... or in a DVC experiment
    python -m skinlesion.serve --host 0.0.0.0 --port 8080 --auth alice:LongPassphrase

It serves exactly the tracked model and exits with a message when there is none: never random
weights. One request runs one forward pass, which yields the probabilities and the Grad-CAM of
every class, so switching the explained class or the opacity never reruns the model.

Uploads are medical images from strangers. The app reads only files that its Gradio server
received itself (whatever path a request names), writes everything it derives from them into one
private folder that is removed when it stops (serve.scratch), and says so when it serves
more than this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import ipaddress
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from .. import atomic, explain
from . import scratch, uploads
from ..classes import CLASSES, display_name
from ..errors import ModelFileError, ModelNotFoundError, UploadError
from .predictor import NonFiniteOutputError, Predictor, ServedModel, load_served_model

DISCLAIMER = ("**Research software, not a medical device.** It is not validated for diagnosis or any "
              "clinical decision. Do not use it to decide about a real skin lesion: see a dermatologist.")
EXAMPLE_CLASSES = ("mel", "nv", "bcc", "vasc")
DEFAULT_OPACITY = 0.45
MIN_DISPLAY_SIZE = 256  # px of the Grad-CAM image; a 64 px overlay is a stamp on a screen
OVERLAY_TTL_S = 600
# Requests run side by side, so that a slow upload holds up no one else: each is decoded in a
# process of its own under a time limit (uploads.Decoder). The forward passes still take turns
# (Predictor's lock): a CPU model already uses every core. A full queue refuses new requests politely.
CONCURRENCY = 4
QUEUE_SIZE = 64
# One message for every path the app will not read, whether it exists or not: telling them apart
# would let a client probe the server's files.
NOT_RECEIVED = "This image is not one the app received (or it has expired). Upload it again."
CLASS_NAMES = tuple(display_name(dx) for dx in CLASSES)


def _refuse(message: str) -> gr.Error:
    return gr.Error(message, title="Invalid request", print_exception=False)


def _shown(value) -> str:
    """A client's value, short, for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_opacity(value) -> float:
    """The API's opacity: a real number from 0 to 1 (the slider's range), else one message."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise _refuse(f"The Grad-CAM opacity must be a number from 0 to 1; got {_shown(value)}.")


def checked_tta(value) -> bool:
    if isinstance(value, bool):
        return value
    raise _refuse(f"Test-time augmentation must be true or false; got {_shown(value)}.")


def checked_class(value) -> int:
    """The index of the class to explain, given by its name as the dropdown shows it."""
    if isinstance(value, str) and value in CLASS_NAMES:
        return CLASS_NAMES.index(value)
    raise _refuse(f"The class to explain must be one of the seven names the dropdown offers ("
                  f"{', '.join(CLASS_NAMES)}); got {_shown(value)}.")


class ReceivedFiles:
    """The files the app may read: those its Gradio server received. An upload's path as a request
    names it is only a claim; it counts only when it is

    - one that Gradio itself recorded: `Blocks.upload_file_set` (every file its /upload route
      wrote) or the upload component's `temp_files` (the bundled examples it copied into its cache,
      and uploads it has seen in a request since), compared as the exact string Gradio stored, and
    - a regular file whose real path (symlinks and `..` resolved) lies in Gradio's upload folder.

    Gradio's own check is not enough here: it runs only when the payload carries
    `meta: {"_type": "gradio.FileData"}`, which a client simply leaves out, and gr.Image's
    preprocess=True does not close that gap (its ImageData model does not require `meta`, and it
    opens the path with any Pillow format before returning it)."""

    def __init__(self, root: str | Path, file_sets: list[Collection[str]] | None = None):
        self.root = Path(os.path.realpath(root))
        self.file_sets = file_sets if file_sets is not None else []

    def path_of(self, upload) -> Path:
        """The real path of the upload `upload` (a payload dict or a path), or gr.Error."""
        path = upload.get("path") if isinstance(upload, dict) else upload
        if isinstance(path, str) and any(path in files for files in self.file_sets):
            real = Path(os.path.realpath(path))
            if real.is_relative_to(self.root) and real.is_file():
                return real
        raise gr.Error(NOT_RECEIVED, title="Upload failed", print_exception=False)


class Handlers:
    """The functions behind the UI's events, separate from the layout so that tests can call them."""

    def __init__(self, predictor: Predictor, received: ReceivedFiles, overlay_dir: Path | None = None,
                 decoder: uploads.Decoder | None = None):
        self.predictor = predictor
        self.received = received
        self.decoder = decoder or uploads.Decoder()
        self.overlay_dir = Path(overlay_dir or tempfile.mkdtemp(prefix="overlays-", dir=scratch.folder()))
        self.overlay_dir.mkdir(parents=True, exist_ok=True)
        self._written = 0

    def analyse(self, upload, tta: bool, opacity: float):
        """upload: gradio's file payload (a dict with "path"), a path, or None when cleared.
        Returns (label, overlay, class choice, notes, all probabilities, state)."""
        if upload is None:
            return None, None, None, "", None, None
        tta, opacity = checked_tta(tta), checked_opacity(opacity)
        path = self.received.path_of(upload)
        try:
            image = self.decoder.read(path, self.predictor.served.img_size)
        except UploadError as e:
            raise gr.Error(str(e), title="Cannot analyse this image", print_exception=False) from None
        except OSError:  # the upload left gradio's cache (delete_cache) since the check, a disk error...
            raise gr.Error(NOT_RECEIVED, title="Upload failed", print_exception=False) from None
        try:
            prediction = self.predictor.predict(image.rgb, tta=tta)
        except NonFiniteOutputError as e:
            raise gr.Error(str(e), title="The model failed", print_exception=False) from None
        top = prediction.top_class
        state = {"rgb": image.rgb, "cams": prediction.cams.astype(np.float16)}
        label = {display_name(dx): float(p) for dx, p in zip(CLASSES, prediction.probs)}
        notes = "\n".join(f"- {n}" for n in image.notes)
        return (label, self._overlay(state, top, opacity), display_name(CLASSES[top]), notes,
                {dx: round(float(p), 6) for dx, p in zip(CLASSES, prediction.probs)}, state)

    def overlay(self, state, class_name: str | None, opacity: float):
        """Redraw the Grad-CAM for another class or opacity from the stored maps: no model call."""
        if state is None or class_name is None:
            return None
        k, opacity = checked_class(class_name), checked_opacity(opacity)
        return self._overlay(state, k, opacity)

    def _overlay(self, state, k: int, opacity: float) -> str:
        """A PNG of the model's input with the CAM on top. Small inputs (the 64 px demo) are shown
        enlarged by an integer factor, pixel for pixel, so that what the model saw stays visible.

        Written here (named by content, atomically) rather than returned as an array: gradio
        6.31 saves an array to a content-named cache file by rewriting it in place, so two
        requests with the same overlay (two users on one bundled example) race, and one client
        downloads a half-written file. Gradio copies a returned path into its cache atomically.
        Both copies lie in the scratch folder, removed when the app stops."""
        image = explain.overlay(state["rgb"], state["cams"][k].astype(np.float32), image_weight=1.0 - opacity)
        factor = -(-MIN_DISPLAY_SIZE // image.shape[0])
        if factor > 1:
            image = image.repeat(factor, axis=0).repeat(factor, axis=1)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        png = buffer.getvalue()
        path = self.overlay_dir / f"{hashlib.sha256(png).hexdigest()[:32]}.png"
        if not path.exists():
            with atomic.atomic_path(path) as tmp:
                tmp.write_bytes(png)
        self._written += 1
        if self._written % 256 == 0:  # gradio has its own copy: ours are only needed for a moment
            cutoff = time.time() - OVERLAY_TTL_S
            for old in self.overlay_dir.glob("*.png"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
        return str(path)


# What each data source is, for the person reading the card.
DERMAMNIST_IMAGES = "DermaMNIST (MedMNIST v2): real HAM10000 dermoscopic images, downsampled to 28x28 px"
TRAINING_DATA = {
    "demo": "demo (synthetic images, not real patients)",
    "dermamnist": f"{DERMAMNIST_IMAGES}, with MedMNIST's official image-level split",
    "ham10000": "HAM10000 (real dermoscopic images, 600x450 px), lesion-grouped split",
}
# A DermaMNIST card names its split (the train stage writes it; older cards lack it: the official one).
DERMAMNIST_SPLITS = {
    ("official", False): "with MedMNIST's official image-level split (no lesion ids)",
    ("official", True): "with MedMNIST's official split, which was drawn by image, and lesion ids "
                        "(Abhishek et al. 2025)",
    ("grouped", True): "lesion-grouped split, with lesion ids (Abhishek et al. 2025)",
}
DERMAMNIST_SIDE = 28  # px of DermaMNIST's images, whatever size the model was trained at


def training_data(card: dict) -> str:
    """The card's training data in words, with the split it was scored on."""
    source = card.get("data_source")
    if source != "dermamnist" or not isinstance(card.get("split"), dict):
        return TRAINING_DATA.get(source, source or "unknown")
    split = card["split"]
    words = DERMAMNIST_SPLITS.get((split.get("scheme"), bool(split.get("lesion_ids"))),
                                  f"split {split.get('scheme', 'unknown')}")
    if split.get("exclude_test_lesions"):
        words += "; train and val without the images of test lesions"
    return f"{DERMAMNIST_IMAGES}, {words}"


LOW_RESOLUTION = 128  # px: below this a dermoscopic photo loses its fine structure


def resolution_warning(card: dict, img_size: int) -> str | None:
    """The line that tells a user how little of their photo a low-resolution model sees."""
    native = DERMAMNIST_SIDE if card.get("data_source") == "dermamnist" else None
    if native is None and img_size >= LOW_RESOLUTION:
        return None
    seen = f"{native or img_size}x{native or img_size} px images"
    if native and img_size != native:
        seen += f" (upsampled to {img_size} px)"
    return (f"- **Low resolution:** this model learned from {seen}. Your photo is shrunk to that before the "
            "model sees it, so the fine structure a dermatologist looks at (pigment network, vessels, "
            "borders) is mostly gone.")


def model_panel(served: ServedModel) -> str:
    card = served.cards[0]
    temperatures = [c.get("temperature") for c in served.cards]
    if all(t is not None for t in temperatures):
        calibration = "yes, temperature scaling (T = " + ", ".join(f"{t:.3g}" for t in temperatures) + ")"
    else:
        calibration = "no (the model cards hold no temperature): probabilities may be over-confident"
    folds = ", ".join(str(c.get("fold", "?")) for c in served.cards)
    val = "; ".join(f"fold {c.get('fold', '?')}: {c['val_metrics']['val_balanced_accuracy']:.3f}"
                    for c in served.cards if "val_balanced_accuracy" in c.get("val_metrics", {}))
    lines = [
        f"- **Weights:** {served.revision}",
        f"- **Architecture:** {card['architecture']}, {served.img_size} px input, "
        f"ensemble of {len(served.cards)} fold model(s) (folds {folds})",
        f"- **Training data:** {training_data(card)}",
        f"- **Calibrated:** {calibration}",
        f"- **Validation balanced accuracy:** {val or 'not recorded'}",
    ]
    if warning := resolution_warning(card, served.img_size):
        lines.append(warning)
    metrics = served.eval_metrics or {}
    for name, title in (("internal", "internal test set"), ("external", "external set")):
        m = metrics.get(name)
        if m and "balanced_accuracy" in m:
            lines.append(f"- **{title.capitalize()}** ({m.get('n_images', '?')} images, TTA "
                         f"{metrics.get('tta', '?')}): balanced accuracy {m['balanced_accuracy']:.3f}, "
                         f"macro AUC {m.get('macro_auc', float('nan')):.3f}")
    if not metrics:
        lines.append("- **Test metrics:** none recorded for these weights (no metrics/eval.json)")
    return "\n".join(lines)


def write_examples(folder: Path) -> list[Path]:
    """Synthetic demo images, one per listed class, rendered at startup (never real patients'
    images, and nothing binary in the repository); the same seed gives the same images."""
    from ..acquire.demo_data import render_demo_image

    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, dx in enumerate(EXAMPLE_CLASSES):
        image, _ = render_demo_image(dx, seed=2024, index=i)
        path = Path(folder) / f"synthetic_{dx}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return paths


def build_app(served: ServedModel, examples_dir: Path | None = None) -> gr.Blocks:
    # Gradio reads GRADIO_TEMP_DIR when it creates a component (its cache) and at launch (where
    # uploads land): from here on, every copy of an upload is inside the scratch folder.
    os.environ["GRADIO_TEMP_DIR"] = str(scratch.folder() / "gradio")
    received = ReceivedFiles(os.environ["GRADIO_TEMP_DIR"])  # Gradio's sets are added below
    decoder = uploads.Decoder()
    decoder.start()  # its first worker starts now, not during the first upload
    handlers = Handlers(Predictor(served), received, decoder=decoder)  # overlays in the scratch folder
    examples_dir = Path(examples_dir or tempfile.mkdtemp(prefix="examples-", dir=scratch.folder()))
    examples = write_examples(examples_dir)
    class_names = list(CLASS_NAMES)
    tta_default = (served.eval_metrics or {}).get("tta", "none") != "none"

    # delete_cache: uploads and overlays older than an hour leave gradio's cache, checked hourly.
    with gr.Blocks(title="Skin-lesion classifier (research demo)", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Skin-lesion classifier: research demo\n" + DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Dermoscopic image: drop, paste or pick one below", type="filepath",
                                 sources=["upload", "clipboard"], height=360, elem_id="upload")
                tta = gr.Checkbox(value=tta_default, label="Test-time augmentation (original + flips: "
                                  "3 views in one batch, about 3x the compute)", elem_id="tta")
                run = gr.Button("Analyse", variant="primary", elem_id="analyse")
                gr.Examples([[str(p)] for p in examples], inputs=[image],
                            label="Synthetic demo images (generated, not real patients)",
                            example_labels=[f"synthetic {display_name(dx)}" for dx in EXAMPLE_CLASSES],
                            api_name="load_example", api_visibility="private")
            with gr.Column():
                label = gr.Label(num_top_classes=3, label="Top 3 diagnoses", elem_id="label")
                cam = gr.Image(label="Grad-CAM: where the model looked", type="filepath", format="png",
                               interactive=False, height=360, elem_id="cam")
                cam_class = gr.Dropdown(class_names, value=None, label="Explain class (default: the predicted one)",
                                        elem_id="cam-class")
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Grad-CAM opacity",
                                    elem_id="opacity")
                notes = gr.Markdown(elem_id="notes")
                with gr.Accordion("All seven probabilities", open=False):
                    probs = gr.JSON(label="probabilities by class code")
        with gr.Accordion("Model", open=True):
            gr.Markdown(model_panel(served), elem_id="model-panel")
        state = gr.State()

        gr.on([image.change, run.click, tta.input], handlers.analyse, inputs=[image, tta, opacity],
              outputs=[label, cam, cam_class, notes, probs, state], api_name="predict",
              preprocess=False)  # the upload's raw path: uploads.read_upload decodes and checks it
        # State in, image out: meaningless to an API client, so private (yet named, as every endpoint).
        gr.on([cam_class.input, opacity.release], handlers.overlay, inputs=[state, cam_class, opacity],
              outputs=[cam], api_name="overlay", api_visibility="private")
    received.file_sets += [demo.upload_file_set, image.temp_files]
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


def launch(demo: gr.Blocks, *, host: str, port: int | None, share: bool, block: bool = True,
           auth: tuple[str, str] | None = None):
    # show_error=False: a client sees the messages the app wrote (gr.Error), never the text of an
    # unexpected exception, which can name the server's files.
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                       max_file_size=uploads.MAX_UPLOAD_BYTES, show_error=False, quiet=not block, auth=auth)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine only."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def exposure_warning(host: str, share: bool, auth: tuple[str, str] | None) -> str | None:
    """One line for the operator when the app is reachable from other machines, else None."""
    who = [f"anyone who can reach this machine on {host}"] * (not is_loopback(host)) + \
          ["anyone with the gradio.live link"] * share
    if not who:
        return None
    if auth:
        return f"warning: {' and '.join(who)} can reach the app; it asks for the --auth login."
    return (f"warning: {' and '.join(who)} can use the app: it has no login (add --auth USER:PASS), "
            "and uploads are medical images.")


def credentials(text: str) -> tuple[str, str]:
    """--auth's USER:PASS (the password may hold colons)."""
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        # The text is not repeated: it may be a mistyped password.
        raise argparse.ArgumentTypeError("expected USER:PASS, e.g. --auth alice:LongPassphrase "
                                         "(a user name, a colon, a non-empty password)")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=None,
                        help="a git revision or DVC experiment name; its models/ are fetched with dvc.api "
                             "(default: the workspace's models/)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (default: off)")
    parser.add_argument("--auth", type=credentials, default=None, metavar="USER:PASS",
                        help="require this login (Gradio's login page) before anything else; for any "
                             "use beyond this machine. Other users of this machine can read command "
                             "lines: use a password for this app only (default: no login)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scratch.exit_cleanly_on_signals()
    try:
        served = load_served_model(args.rev)
    except (ModelNotFoundError, ModelFileError) as e:  # no weights, or weights that must not be served
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"serving {served.revision}: {len(served.cards)} fold model(s), {served.img_size} px", flush=True)
    if warning := exposure_warning(args.host, args.share, args.auth):
        print(warning, file=sys.stderr, flush=True)
    launch(build_app(served), host=args.host, port=args.port, share=args.share, auth=args.auth)

