"""HTTP downloads that survive real networks: resume, verify, retry, then rename into place.

- Some servers (Harvard Dataverse among them) refuse the default Python User-Agent: we send a
  browser-like one.
- A dropped connection resumes where it stopped with an HTTP Range request.
- The file is checked against the size and MD5 the server's API reports; a mismatch deletes the
  partial file and downloads again.
- Transient failures (connection errors, timeouts, 5xx, 429) are retried with exponential backoff.
- The bytes go to `<name>.part` and are renamed onto `<name>` only when verified, so a complete
  file is always a correct one. A `.part` left by an interrupted run is resumed by the next one.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import requests
from tqdm import tqdm

from ..errors import DownloadError

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0 Safari/537.36")
HEADERS = {"User-Agent": USER_AGENT}
CHUNK = 1 << 20  # for hashing
STREAM_CHUNK = 1 << 16  # bytes read before a write: what a dropped connection can cost
TIMEOUT = (15, 60)  # seconds to connect, seconds between bytes


class _Retry(Exception):
    """A failure worth another attempt."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def get_json(url: str, *, retries: int = 2, backoff: float = 1.0, timeout: tuple[float, float] = TIMEOUT) -> dict:
    """GET a JSON document, with retries; raises DownloadError with the reason."""
    error = None
    for attempt in range(retries + 1):
        try:
            r = requests.get(url, headers=HEADERS, timeout=timeout)
            if r.status_code < 500 and r.status_code != 429:
                r.raise_for_status()
                return r.json()
            error = f"HTTP {r.status_code}"
        except (requests.ConnectionError, requests.Timeout) as e:
            error = f"{type(e).__name__}: {e}"
        except (requests.HTTPError, ValueError) as e:
            raise DownloadError(f"{url}: {e}") from None
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise DownloadError(f"{url}: {error}")


def _transfer(url: str, part: Path, size: int, progress: tqdm, timeout: tuple[float, float]) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have == size:
        return
    headers = {**HEADERS, "Range": f"bytes={have}-"} if have else HEADERS
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code == 416:  # our range is past the end: start over
                part.unlink(missing_ok=True)
                raise _Retry("HTTP 416 (range not satisfiable)")
            if r.status_code not in (200, 206):
                raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}")
            resumed = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if not resumed:
                have = 0
            progress.reset(total=size)
            progress.update(have)
            with open(part, "ab" if resumed else "wb") as out:
                for block in r.iter_content(STREAM_CHUNK):
                    out.write(block)
                    progress.update(len(block))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None
    got = part.stat().st_size
    if got != size:
        raise _Retry(f"connection ended at {got} of {size} bytes")


def download(url: str, dest: str | Path, *, size: int, md5: str, retries: int = 4, backoff: float = 2.0,
             timeout: tuple[float, float] = TIMEOUT) -> Path:
    """Download url to dest, verified against size and md5. A verified dest is kept as it is."""
    dest = Path(dest)
    if dest.exists() and dest.stat().st_size == size and md5sum(dest) == md5:
        print(f"{dest.name}: already downloaded and verified")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    reasons = []
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as progress:
        for attempt in range(retries + 1):
            try:
                _transfer(url, part, size, progress, timeout)
                got = md5sum(part)
                if got != md5:
                    part.unlink()
                    raise _Retry(f"MD5 {got} differs from the expected {md5}")
                os.replace(part, dest)
                return dest
            except _Retry as e:
                reasons.append(str(e))
                if attempt < retries:
                    wait = backoff * 2 ** attempt
                    tqdm.write(f"{dest.name}: {e}; retry {attempt + 1} of {retries} in {wait:.0f} s")
                    time.sleep(wait)
    kept = f"; the partial file {part} is kept and the next run resumes it" if part.exists() else ""
    raise DownloadError(f"{url}: download failed after {retries + 1} attempts ({'; '.join(reasons[-3:])}){kept}")
