"""DermaMNIST's lesion ids: the ISIC id of every DermaMNIST image, and through the HAM10000 metadata
its lesion, so that the split, the audit, `compare` and the app see real lesions.

The DermaMNIST npz carries no ids. Abhishek et al. ("Investigating the Quality of DermaMNIST and
Fitzpatrick17k Dermatological Image Datasets", Sci. Data 2025) publish them:
`dermamnist_split_info.csv` (columns split,index,image_id; row (split, index) names the image behind
`<split>_images[index]`) in the repository kakumarabhishek/Corrected-Skin-Image-Datasets (MIT). The
HAM10000 metadata table then gives each ISIC id its lesion_id and the other metadata columns.

Two inputs, each found by the first of its routes that works, every route stated in the log:
  1. local copies: data.dermamnist_ids for the mapping; data.ham10000_metadata, else the table inside
     data.ham10000_dir, for the metadata; then copies a previous run downloaded into data/downloads/;
  2. when online, the mapping from its public URL (pinned to one commit and checked by size and MD5)
     and the metadata table alone from Harvard Dataverse (verified by the size and MD5 its API gives),
     both kept in data/downloads/;
  3. with neither, DermaMNIST stays image-level (each image its own lesion), and one log line says
     how to get the ids. A param set by hand that leads nowhere is an error instead: ids were asked for.
data.dermamnist_ids=none skips all three: image-level whatever the network, as runs were before ids.

Nothing is written before `attach` has checked the pair against the npz: the row count of every
split, and every row's npz label against its image's dx in the metadata. A mapping for another file,
or one in another order, fails there with one message naming the first mismatch.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CLASSES
from ..errors import DataError, DownloadError
from . import dataverse, fetch, sources

Log = Callable[[str], None]

MAPPING_NAME = "dermamnist_split_info.csv"
NONE = "none"  # data.dermamnist_ids: no lesion ids, nothing looked for (a file of that name: ./none)
MAPPING_COLUMNS = ("split", "index", "image_id")
SPLITS = ("train", "val", "test")  # the npz's splits, in its order
# Far above the real file, far below what a hostile one would need to exhaust memory.
MAX_MAPPING_BYTES = 16 << 20
REPOSITORY = "kakumarabhishek/Corrected-Skin-Image-Datasets"
# Pinned to one commit: the same URL then always serves the file whose ids were checked against DermaMNIST.
COMMIT = "d15d70dc445c7f5960d8376f89512ea9079c4222"
MAPPING_IN_REPOSITORY = f"DermaMNIST/DermaMNIST_Analysis/{MAPPING_NAME}"
MAPPING_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/{MAPPING_IN_REPOSITORY}"
MAPPING_SIZE = 243_056
MAPPING_MD5 = "de620804ae7c2159c625a70351839fa9"
METADATA_ID = dataverse.FILE_IDS["HAM10000_metadata"]
MAPPING_FOLDER = "lesion_ids"  # under data/downloads/
METADATA_NAME = "HAM10000_metadata.tab"  # Dataverse's name for it, when the server's is another
METADATA_FOLDER = "dataverse"  # under data/downloads/, where the HAM10000 Dataverse route keeps its table too

HOW = (f"set data.dermamnist_ids to {MAPPING_NAME} (from https://github.com/{REPOSITORY}, "
       f"{MAPPING_IN_REPOSITORY}) and data.ham10000_metadata to the HAM10000 metadata table "
       f"(Kaggle's HAM10000_metadata.csv, or Dataverse's HAM10000_metadata.tab: "
       f"{dataverse.SERVER}/api/access/datafile/{METADATA_ID}?format=original), or run once with internet access "
       "to download both")


@dataclass(frozen=True)
class Remote:
    """Where route 2 downloads from (tests point it at a local server)."""
    mapping_url: str = MAPPING_URL
    mapping_size: int = MAPPING_SIZE
    mapping_md5: str = MAPPING_MD5
    dataverse: str = dataverse.SERVER


@dataclass(frozen=True)
class Request:
    """Where to look: data.dermamnist_ids, data.ham10000_metadata, data.ham10000_dir, and route 2's servers."""
    ids: str = ""
    metadata: str = ""
    ham10000_dir: str = ""
    remote: Remote = Remote()


@dataclass(frozen=True)
class Found:
    mapping: Path
    metadata: Path


def _local(param: str, value: str, name: str, find: Callable[[Path], Path | None]) -> Path:
    """The file a param names: the file itself, or found in the folder it names."""
    given = Path(value)
    if given.is_file():
        return given
    if given.is_dir() and (found := find(given)) is not None:
        return found
    what = "does not exist" if not given.exists() else f"is a folder without {name}"
    raise DataError(f"{param} {given} {what}; {HOW}")


def _mapping_in(folder: Path) -> Path | None:
    candidate = folder / MAPPING_NAME
    return candidate if candidate.is_file() else None


def find(request: Request, downloads: Path, official_sizes: bool, log: Log = print) -> Found | None:
    """The mapping and the metadata by the first route that works for each, or None (image-level).
    official_sizes: whether the npz has the official release's split sizes, the only file the public
    mapping describes; for another, only copies named by a param are used."""
    if request.ids == NONE:
        log(f"DermaMNIST lesion ids: none (data.dermamnist_ids={NONE}); each image is its own lesion")
        return None
    asked = bool(request.ids or request.metadata)
    if not (asked or official_sizes):
        log("DermaMNIST lesion ids: none looked for, since this npz's split sizes differ from the official "
            "release's, which the public id mapping describes; each image is its own lesion. For a mapping of "
            "this file, set data.dermamnist_ids and data.ham10000_metadata")
        return None
    remote = request.remote
    mapping = metadata = None
    if request.ids:
        mapping = _local("data.dermamnist_ids", request.ids, MAPPING_NAME, _mapping_in)
    elif (kept := _mapping_in(Path(downloads) / MAPPING_FOLDER)) is not None:
        mapping = kept
    if request.metadata:
        metadata = _local("data.ham10000_metadata", request.metadata, "a HAM10000_metadata table",
                          sources.find_metadata)
    elif request.ham10000_dir and Path(request.ham10000_dir).is_dir():
        metadata = sources.find_metadata(Path(request.ham10000_dir))
    if metadata is None and (Path(downloads) / METADATA_FOLDER).is_dir():
        metadata = sources.find_metadata(Path(downloads) / METADATA_FOLDER)  # fetch renames only verified files
    log(f"DermaMNIST lesion ids, route 1 of 3 (local copies): the id mapping {mapping or 'not found'}, "
        f"the HAM10000 metadata {metadata or 'not found'}")
    if mapping and metadata:
        return Found(mapping, metadata)

    log("DermaMNIST lesion ids, route 2 of 3 (download): "
        + ", ".join(what for what, missing in ((f"the id mapping from GitHub ({REPOSITORY})", mapping is None),
                                              (f"the HAM10000 metadata from {remote.dataverse}", metadata is None))
                    if missing))
    try:
        if mapping is None:
            mapping = fetch.download(remote.mapping_url, Path(downloads) / MAPPING_FOLDER / MAPPING_NAME,
                                     size=remote.mapping_size, md5=remote.mapping_md5, retries=1,
                                     timeout=dataverse.OPTIONAL_TIMEOUT)
        if metadata is None:
            info = dataverse.file_info(METADATA_ID, remote.dataverse, retries=0, timeout=dataverse.OPTIONAL_TIMEOUT)
            name = Path(info.name).name  # the server's name, but never a path
            if Path(name.lower()).stem != "ham10000_metadata":  # where route 1 looks for it next time
                name = METADATA_NAME
            metadata = fetch.download(info.url, Path(downloads) / METADATA_FOLDER / name, size=info.size,
                                      md5=info.md5, retries=1, timeout=dataverse.OPTIONAL_TIMEOUT)
        log(f"DermaMNIST lesion ids: the id mapping {mapping}, the HAM10000 metadata {metadata} "
            "(downloads verified by size and MD5, kept for the next run)")
        return Found(mapping, metadata)
    except DownloadError as e:
        why = str(e)
    if asked:
        raise DataError(f"DermaMNIST lesion ids were asked for (data.dermamnist_ids or data.ham10000_metadata is set), "
                        f"but {'the id mapping' if mapping is None else 'the HAM10000 metadata'} could not be found "
                        f"or downloaded ({why}); {HOW}")
    log(f"DermaMNIST lesion ids, route 3 of 3: none (the download failed: {why}), so each image is its own lesion "
        f"and only the official, image-level split can be used. To get lesion ids, {HOW}")
    return None


def read_mapping(path: Path) -> pd.DataFrame:
    """The mapping (split, index as int, image_id), its form checked: one DataError naming the problem."""
    size = Path(path).stat().st_size
    if size > MAX_MAPPING_BYTES:
        raise DataError(f"{path} is {size:,} bytes, not {MAPPING_NAME} (a few hundred KB); {HOW}")
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path} is not a readable CSV table ({type(e).__name__}: {e}); {HOW}") from None
    table.columns = [c.strip() for c in table.columns]
    if tuple(table.columns) != MAPPING_COLUMNS:
        raise DataError(f"{path}: columns {list(table.columns)}, expected {list(MAPPING_COLUMNS)}: is this "
                        f"{MAPPING_NAME}? {HOW}")
    table = table.apply(lambda column: column.str.strip())
    unknown = table[~table["split"].isin(SPLITS)]
    if len(unknown):
        raise DataError(f"{path}: row {unknown.index[0] + 2} names the split {unknown['split'].iloc[0]!r}; "
                        f"expected one of {list(SPLITS)}")
    not_index = table[~table["index"].str.fullmatch(r"\d{1,9}")]
    if len(not_index):
        raise DataError(f"{path}: row {not_index.index[0] + 2} has the index {not_index['index'].iloc[0]!r}; "
                        "expected a row number of its split's array (0, 1, ...)")
    table["index"] = table["index"].astype(np.int64)
    for columns, what in ((["split", "index"], "split and index"), (["image_id"], "image id")):
        twice = table[table.duplicated(columns, keep=False)]
        if len(twice):
            first = twice.iloc[0]
            raise DataError(f"{path}: {len(twice)} rows share one {what}, e.g. {first['split']} index {first['index']} "
                            f"({first['image_id']}); each DermaMNIST image has one row")
    return table


def attach(labels: dict[str, np.ndarray], mapping: pd.DataFrame, metadata: pd.DataFrame,
           where: str) -> dict[str, pd.DataFrame]:
    """{split: the metadata rows of its images, in the npz's order}, after checking the mapping
    against the npz (row counts, indices) and every npz label against the metadata's dx.
    labels: {split: class indices}, as dermamnist.load_npz reads them. where: names both files."""
    counts = {s: int((mapping["split"] == s).sum()) for s in SPLITS}
    expected = {s: len(labels[s]) for s in SPLITS}
    if counts != expected:
        raise DataError(f"{where}: the mapping has {counts} rows per split but the npz {expected} images: this mapping "
                        f"is not for this npz; {HOW}")
    twice = metadata[metadata["image_id"].duplicated()]
    if len(twice):
        raise DataError(f"{where}: the metadata lists image {twice['image_id'].iloc[0]} twice; download it again")
    meta = metadata.set_index("image_id")
    out = {}
    for split in SPLITS:
        rows = mapping[mapping["split"] == split].set_index("index").sort_index()
        past = rows.index[rows.index >= expected[split]]
        if len(past):  # with no index twice and the counts equal, every index below the count is then present
            raise DataError(f"{where}: the mapping's {split} index {past[0]} is past the npz's {expected[split]} "
                            f"{split} images; this mapping is not for this npz")
        unknown = rows[~rows["image_id"].isin(meta.index)]
        if len(unknown):
            raise DataError(f"{where}: {split} index {unknown.index[0]} is image {unknown['image_id'].iloc[0]}, which the "
                            f"metadata does not list ({len(unknown)} {split} image(s) unknown): the metadata must be "
                            f"HAM10000's, all 10,015 images; {HOW}")
        joined = meta.loc[rows["image_id"]].reset_index()
        npz_dx = np.array(CLASSES)[labels[split]]
        wrong = np.flatnonzero(npz_dx != joined["dx"].to_numpy())
        if len(wrong):
            k = wrong[0]
            raise DataError(f"{where}: the labels disagree, first at {split} index {k}: image {joined['image_id'][k]} has the "
                            f"npz label {labels[split][k]} ({npz_dx[k]}) but the metadata's dx is "
                            f"{joined['dx'][k]!r} ({len(wrong)} of the {len(joined)} {split} rows disagree). The "
                            f"mapping belongs to another file, or its rows are in another order; {HOW}")
        out[split] = joined
    return out


def read(found: Found, labels: dict[str, np.ndarray], log: Log = print) -> dict[str, pd.DataFrame]:
    """The checked metadata rows of every npz image (attach), from the files route 1 or 2 found."""
    rows = attach(labels, read_mapping(found.mapping), sources.read_metadata(found.metadata, log),
                  where=f"{found.mapping} with {found.metadata}")
    lesions = pd.concat(rows.values())["lesion_id"].nunique()
    log(f"DermaMNIST lesion ids: every npz label matches its image's dx; {sum(map(len, rows.values()))} images "
        f"of {lesions} lesions")
    return rows
