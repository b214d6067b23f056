"""Where the real data comes from: each dataset's routes, tried in order, each stated in the log.

HAM10000: (1) a local copy in data.ham10000_dir, extracted or zipped, Kaggle or Dataverse layout;
(2) Harvard Dataverse, anonymous; (3) the Kaggle API. The unified external set: (1) a local copy in
data.external_dir; (2) the Kaggle API. Zips are extracted (safely and within the data.max_* limits,
see archives.py) into raw/, which the download stage gives as a temporary folder that replaces
data/raw/<dataset> only once everything checked out. Downloads are kept, verified, in
data/downloads/ so a rerun of the stage does not fetch gigabytes again. HAM10000's lesion masks
come with the Dataverse route; a copy without them gets them from a masks zip beside it or, best
effort, from Dataverse, extracted into raw/ (never into the user's copy). Only cam_in_lesion needs
them: without them the stage goes on.

A local copy must lie outside every pipeline output (PIPELINE_OUTPUTS): the download stage replaces
its outputs whole, and `dvc repro` removes a stage's outputs before it runs the stage, so a copy
kept in one would be deleted. refuse_copy_in_outputs says so before any work.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .. import atomic
from . import archives, dataverse, fetch, kaggle, sources
from ..errors import DataError

Log = Callable[[str], None]

HOW_LOCAL = ("set data.ham10000_dir to a downloaded copy, extracted or zipped: the Kaggle layout "
             "(HAM10000_metadata.csv, HAM10000_images_part_1/ and _2/, or the Kaggle zip) or the Dataverse "
             "files (HAM10000_metadata.tab, HAM10000_images_part_1.zip and _2.zip); "
             "e.g. dvc exp run -S data.source=ham10000 -S data.ham10000_dir=/path/to/copy")
HOW_DATAVERSE = (f"needs internet access to {dataverse.SERVER} (anonymous, {dataverse.DOI}, about 2.6 GB); "
                 "a rerun resumes an interrupted download")
HOW_KAGGLE = ("pip install kaggle, then put your API token in ~/.kaggle/kaggle.json "
              "or set KAGGLE_USERNAME and KAGGLE_KEY")
# Every path a stage of dvc.yaml writes: its outs and metrics (tests/test_hostile_round3_data.py keeps
# this list equal to dvc.yaml's).
PIPELINE_OUTPUTS = (
    "data/raw/ham10000", "data/raw/external", "data/manifests", "metrics/download.json",  # download
    "data/audit", "metrics/leakage.json",  # audit
    "data/splits", "metrics/split.json",  # split
    "data/cache/ham10000", "data/cache/external",  # preprocess
    "models", "dvclive", "metrics/train.json",  # train
    "data/predictions", "plots/eval", "metrics/eval.json",  # evaluate
    "plots/gradcam", "metrics/gradcam.json",  # gradcam
)
HOW_MASKS = (f"download {dataverse.MASKS_NAME} by hand ({dataverse.masks_url()}) into data.ham10000_dir, "
             "next to the images")


def _same_place(a: Path, b: Path) -> bool:
    """One file or folder: by identity where both exist (a case-insensitive disk or a bind mount
    gives one folder two names), else by name."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(a) == os.path.normcase(b)


def _within(inner: Path, outer: Path) -> bool:
    """inner is outer or lies inside it (both resolved)."""
    return any(_same_place(p, outer) for p in (inner, *inner.parents))


def refuse_copy_in_outputs(param: str, value: str, safe_place: str, searched_below: bool,
                           outputs: tuple[str, ...] = PIPELINE_OUTPUTS) -> None:
    """Raise DataError when the local copy that `param` names (`value`, relative to the working
    folder, the repository root) is or lies inside a pipeline output, or, for a copy whose reader
    searches below its top level (searched_below), holds one: its reader would take that output's
    files for the copy's. Links and `..` are followed first, in both paths. safe_place: where the
    message suggests the copy go instead."""
    if not value:
        return
    real = Path(os.path.realpath(value))
    shown = value if real == Path(os.path.abspath(value)) else f"{value} (resolves to {real})"
    for output in outputs:
        out = Path(os.path.realpath(output))
        if _within(real, out):
            where = f"{'is' if _same_place(real, out) else 'lies inside'} {output}, an output of the pipeline"
            why = "so the copy would be deleted"
        elif searched_below and _within(out, real):
            where = (f"holds {output}, an output of the pipeline, and the copy is searched below its top level, "
                     "so the pipeline would read its own output as part of the copy")
            why = "so what was read from there would be deleted"
        else:
            continue
        raise DataError(f"{param} {shown} {where}: that output is replaced by what the pipeline writes, and "
                        f"`dvc repro` removes a stage's outputs before it runs the stage, {why}. Move the copy "
                        f"elsewhere, e.g. to {safe_place} (not an output) or outside the repository, and set "
                        f"{param} to it (dvc exp run -S {param}={safe_place}); nothing was read or written")


def _image_stem(name: str) -> str | None:
    """The image id of a zip member that is an image, else None."""
    leaf = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, _, suffix = leaf.rpartition(".")
    return stem if "." + suffix.lower() in sources.IMAGE_SUFFIXES else None


def _keep_ham10000_member() -> Callable[[str], bool]:
    """Member filter for HAM10000 zips: images, metadata and masks, each image stem once (the
    Kaggle zip repeats every image in lower-case folders) and not the hmnist_*.csv pixel tables."""
    seen: set[str] = set()

    def keep(name: str) -> bool:
        if name.replace("\\", "/").rsplit("/", 1)[-1].lower().startswith("ham10000_metadata"):
            return True
        stem = _image_stem(name)
        if stem is None or stem in seen:
            return False
        seen.add(stem)
        return True

    return keep


def refuse_two_images_under_one_id(zips: list[Path]) -> None:
    """Raise DataError when two image members of these zips share an id but not their content, which
    the zips' directories tell by CRC-32 and size: only the first is extracted (the Kaggle zip's
    lower-case duplicates are the same bytes), so the other could not be compared later."""
    seen: dict[str, tuple[int, int, Path, str]] = {}
    for archive in zips:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            continue  # archives.extract names what is wrong with it
        for m in members:
            stem = None if m.is_dir() else _image_stem(m.filename)
            if stem is None:
                continue
            first = seen.setdefault(stem, (m.CRC, m.file_size, archive, m.filename))
            if first[:2] != (m.CRC, m.file_size):
                names = ((first[3], m.filename) if first[2] == archive
                         else (f"{first[2]}: {first[3]}", f"{archive}: {m.filename}"))
                raise DataError(sources.two_files_under_one_id(archive, stem, *names))


def extract_ham10000(files: list[Path], raw: Path, limits: archives.Limits = archives.Limits()) -> None:
    """Zips and loose metadata into raw/ (atomically: all or nothing). A per-part zip goes into a
    folder of its own name, since its members may sit at its top level."""
    refuse_two_images_under_one_id(sorted(f for f in files if f.suffix.lower() == ".zip"))
    keep = _keep_ham10000_member()
    with atomic.atomic_dir(raw) as tmp:
        for f in sorted(files):
            if f.suffix.lower() == ".zip":
                named = f.stem.lower().startswith((sources.IMAGE_FOLDER_PREFIX, sources.MASK_FOLDER.lower()))
                archives.extract(f, tmp / f.stem if named else tmp, keep, limits)
            else:
                shutil.copy2(f, tmp / f.name)


def _local_ham10000_files(root: Path) -> list[Path]:
    zips = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip")
    meta = sources.find_metadata(root)
    return zips + ([meta] if meta and zips else [])


def _no_masks(log: Log, why: str) -> None:
    log(f"HAM10000 lesion masks: {why}; cam_in_lesion will be unavailable for HAM10000. To get it, {HOW_MASKS}")


def _masks_zip(downloads: Path, server: str, log: Log, optional: bool) -> Path | None:
    """The verified masks zip from Dataverse, or None, said in one log line."""
    try:
        return dataverse.download_masks(downloads / "dataverse", server, optional=optional)
    except fetch.DownloadError as e:
        _no_masks(log, f"not downloaded ({e})")
        return None


def _read_with_masks(root: Path, raw: Path, downloads: Path, log: Log, server: str,
                     download_masks: bool = True, limits: archives.Limits = archives.Limits()) -> pd.DataFrame:
    """Read the copy in root; when it has no lesion masks, extract them into raw/ from a masks zip
    in root or, once and best effort, downloaded from Dataverse."""
    frame = sources.read_ham10000(root, mask_root=raw, log=log)
    if (frame["mask_path"] != "").any():
        return frame
    beside = [p for p in sorted(Path(root).glob("*")) if p.name.lower() == dataverse.MASKS_NAME.lower()]
    if beside:
        masks = beside[0]
    elif download_masks:
        masks = _masks_zip(downloads, server, log, optional=True)
    else:  # the caller tried the download already, and said so
        masks = None
    if masks is None:
        return frame
    try:
        with atomic.atomic_dir(raw / sources.MASK_FOLDER) as tmp:
            archives.extract(masks, tmp, _keep_ham10000_member(), limits)
    except DataError as e:
        _no_masks(log, str(e))
        return frame
    frame = sources.read_ham10000(root, mask_root=raw, log=log)
    log(f"HAM10000 lesion masks: {(frame['mask_path'] != '').sum()} of {len(frame)} images have one, "
        f"from {masks.name} extracted into {raw / sources.MASK_FOLDER}")
    return frame


def ham10000(data_dir: str, raw: Path, downloads: Path, log: Log = print,
             server: str = dataverse.SERVER, limits: archives.Limits = archives.Limits()) -> pd.DataFrame:
    """The HAM10000 manifest by the first route that works, with what it extracts in raw/."""
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"data.ham10000_dir {root} is not a folder; {HOW_LOCAL}")
        if sources.has_ham10000_layout(root):
            log(f"HAM10000 route 1 of 3: the extracted local copy in {root}")
            return _read_with_masks(root, raw, downloads, log, server, limits=limits)
        files = _local_ham10000_files(root)
        if files:
            log(f"HAM10000 route 1 of 3: the zipped local copy in {root}, extracted into {raw}")
            extract_ham10000(files, raw, limits)
            return _read_with_masks(raw, raw, downloads, log, server, limits=limits)
        raise DataError(f"data.ham10000_dir {root} holds neither an extracted HAM10000 copy nor its zips; {HOW_LOCAL}")
    log("HAM10000 route 1 of 3: no local copy (data.ham10000_dir is empty)")

    log(f"HAM10000 route 2 of 3: Harvard Dataverse ({server})")
    try:
        files = dataverse.download_ham10000(downloads / "dataverse", server)
        masks = _masks_zip(downloads, server, log, optional=False)
        files += [masks] if masks else []
        log(f"HAM10000: downloaded and verified {', '.join(f.name for f in files)}; extracting into {raw}")
        extract_ham10000(files, raw, limits)
        return _read_with_masks(raw, raw, downloads, log, server, download_masks=False, limits=limits)
    except fetch.DownloadError as e:
        dataverse_failure = str(e)
        log(f"HAM10000 route 2 of 3 failed: {e}")

    log(f"HAM10000 route 3 of 3: the Kaggle API ({kaggle.HAM10000})")
    kaggle_failure = kaggle.unavailable()
    if kaggle_failure is None:
        archive = kaggle.download(kaggle.HAM10000, downloads / "kaggle")
        extract_ham10000([archive], raw, limits)
        return _read_with_masks(raw, raw, downloads, log, server, limits=limits)
    raise DataError(
        "no HAM10000 copy could be found or downloaded. The three routes, and how to use each:\n"
        f"  1. a local copy: data.ham10000_dir is empty; {HOW_LOCAL}\n"
        f"  2. Harvard Dataverse: {dataverse_failure}; {HOW_DATAVERSE}\n"
        f"  3. the Kaggle API ({kaggle.HAM10000}): {kaggle_failure}; {HOW_KAGGLE}")


def extract_unified(archive: Path, raw: Path, split: str, limits: archives.Limits = archives.Limits()) -> None:
    """Only the split to evaluate, out of the whole unified zip."""
    wanted = f"unified_dataset/{split}/"

    def keep(name: str) -> bool:
        return wanted in name.replace("\\", "/").lower()

    with atomic.atomic_dir(raw) as tmp:
        if not archives.extract(archive, tmp, keep, limits):
            raise DataError(f"{archive}: no Unified_dataset/{split}/ images inside")


def unified(data_dir: str, split: str, raw: Path, downloads: Path, log: Log = print,
            limits: archives.Limits = archives.Limits()) -> pd.DataFrame:
    """The unified external set's manifest by the first route that works."""
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"data.external_dir {root} is not a folder; point it at the unified dataset, "
                            "extracted (Unified_dataset/<split>/<dx>/) or zipped")
        if sources.unified_root(root):
            log(f"external route 1 of 2: the extracted local copy in {root} (split {split})")
            return sources.read_unified(root, split)
        zips = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip")
        if zips:
            log(f"external route 1 of 2: the zipped local copy {zips[0]}, split {split} extracted into {raw}")
            extract_unified(zips[0], raw, split, limits)
            return sources.read_unified(raw, split)
        raise DataError(f"data.external_dir {root} holds neither Unified_dataset/ nor a zip of it")
    log("external route 1 of 2: no local copy (data.external_dir is empty)")
    log(f"external route 2 of 2: the Kaggle API ({kaggle.UNIFIED})")
    why = kaggle.unavailable()
    if why is None:
        archive = kaggle.download(kaggle.UNIFIED, downloads / "kaggle")
        extract_unified(archive, raw, split, limits)
        return sources.read_unified(raw, split)
    raise DataError(
        "no copy of the unified external set could be found or downloaded. The two routes, and how to use each:\n"
        "  1. a local copy: data.external_dir is empty; set it to the downloaded dataset, extracted "
        "(Unified_dataset/<split>/<dx>/) or zipped\n"
        f"  2. the Kaggle API ({kaggle.UNIFIED}): {why}; {HOW_KAGGLE}\n"
        "  or set data.external=none to skip the external evaluation")
