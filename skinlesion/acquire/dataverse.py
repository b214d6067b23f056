"""HAM10000 on Harvard Dataverse (doi:10.7910/DVN/DBW86T): anonymous per-file downloads.

`<server>/api/files/<id>` reports each file's name, size and MD5; `<server>/api/access/datafile/<id>`
serves the bytes. The metadata table was ingested as tabular data: its recorded MD5 and
`originalFileSize` are those of the original upload, which `?format=original` returns, so that
is the form we download (the reader accepts it comma- or tab-separated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import fetch

SERVER = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
# The files the pipeline needs.
FILE_IDS = {
    "HAM10000_images_part_1.zip": 3172585,
    "HAM10000_images_part_2.zip": 3172584,
    "HAM10000_metadata": 4338392,
}
# The lesion masks: only the gradcam stage's cam_in_lesion reads them, so they are optional.
MASKS_NAME = "HAM10000_segmentations_lesion_tschandl.zip"
MASKS_ID = 3838943
# For the optional masks alone: offline, fail at once rather than wait through retries.
OPTIONAL_TIMEOUT = (5, 30)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    md5: str
    url: str


def file_info(file_id: int, server: str = SERVER, *, retries: int = 2,
              timeout: tuple[float, float] = fetch.TIMEOUT) -> RemoteFile:
    """Name, size, MD5 and download URL of one datafile, from the Dataverse API."""
    meta = fetch.get_json(f"{server}/api/files/{file_id}", retries=retries, timeout=timeout)
    data = meta.get("data", {}).get("dataFile", {})
    checksum = data.get("checksum", {})
    md5 = data.get("md5") or (checksum.get("value") if checksum.get("type") == "MD5" else None)
    if not md5 or "filesize" not in data:
        raise fetch.DownloadError(f"{server}/api/files/{file_id}: no size or MD5 in the answer; cannot verify a download")
    url = f"{server}/api/access/datafile/{file_id}"
    if "originalFileSize" in data:  # ingested tabular file: the checksum is the original's
        return RemoteFile(data.get("originalFileName") or data["filename"], int(data["originalFileSize"]), md5,
                          url + "?format=original")
    return RemoteFile(data["filename"], int(data["filesize"]), md5, url)


def download_ham10000(dest: Path, server: str = SERVER) -> list[Path]:
    """Download and verify the HAM10000 images and metadata into dest; return the local files.

    Asks the API for every file first, so an unreachable server fails before anything is written.
    """
    infos = [file_info(i, server) for i in FILE_IDS.values()]
    return [fetch.download(f.url, Path(dest) / f.name, size=f.size, md5=f.md5) for f in infos]


def masks_url(server: str = SERVER) -> str:
    return f"{server}/api/access/datafile/{MASKS_ID}"


def download_masks(dest: Path, server: str = SERVER, *, optional: bool = False) -> Path:
    """Download and verify the lesion masks zip into dest. A verified copy already there is used
    without asking the server (fetch renames a file into place only once verified). optional: one
    try with a short timeout, for when nothing else needs the network."""
    local = Path(dest) / MASKS_NAME
    if local.is_file():
        return local
    if optional:
        info = file_info(MASKS_ID, server, retries=0, timeout=OPTIONAL_TIMEOUT)
        return fetch.download(info.url, local, size=info.size, md5=info.md5, retries=1, timeout=OPTIONAL_TIMEOUT)
    info = file_info(MASKS_ID, server)
    return fetch.download(info.url, local, size=info.size, md5=info.md5)
