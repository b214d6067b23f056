"""Stage download: get HAM10000 and the external set, check every image, write their manifests.

    python stages/download.py

data.source=demo generates a synthetic HAM10000 in the Kaggle layout under data/raw/ham10000;
data.source=ham10000 tries, in order: the local copy in data.ham10000_dir (extracted or zipped),
Harvard Dataverse, the Kaggle API (see skinlesion/acquire/routes.py); data.source=dermamnist reads
data.dermamnist_path or uses the medmnist package (see skinlesion/acquire/dermamnist.py), and its
lesion ids from data.dermamnist_ids and data.ham10000_metadata, kept or public copies, or goes on
without (see skinlesion/acquire/lesion_ids.py).
data.external: demo | unified | none, where unified reads data.external_dir or uses the Kaggle API.
Zips unpack within data.max_* (skinlesion/acquire/archives.py). Every image is decoded once
(data.bad_images: fail | skip). Outputs: data/raw/{ham10000,external},
data/manifests/{ham10000,external}.csv, data/manifests/official_split.csv (the source's own split:
DermaMNIST's; empty for the others), metrics/download.json.

A local copy (data.ham10000_dir, data.external_dir, data.dermamnist_path, data.dermamnist_ids,
data.ham10000_metadata) inside any pipeline output
is refused before any work: the stage replaces its outputs, and `dvc repro` removes them first.

All of it is built in temporary folders beside the outputs and checked first (metadata rows
against images, every image decoded, the manifests validated); only then do the new folders
replace data/raw/* and data/manifests, by renames. On any failure the previous outputs stay as
they were.
"""

import functools
import os
from pathlib import Path

from skinlesion import atomic, cli, manifest
from skinlesion.acquire import archives, demo_data, dermamnist, image_check, lesion_ids, routes, sources
from skinlesion.errors import DataError
from skinlesion.params import load_params

RAW = Path("data/raw")
MANIFESTS = Path("data/manifests")
DOWNLOADS = Path("data/downloads")  # verified downloads, kept across reruns; not a DVC output
DEMO_WORKERS = os.cpu_count() or 1  # processes rendering demo images: the bytes are the same for any number
# The params that name a local copy: (where the refusal suggests it go, whether its reader searches
# below its top level: HAM10000's image folders at any depth, Unified_dataset/ one folder down; a
# DermaMNIST folder is only looked into for its npz file).
LOCAL_COPIES = {
    "ham10000_dir": ("data/local/ham10000", True),
    "external_dir": ("data/local/unified", True),
    "dermamnist_path": ("data/local/dermamnist.npz", False),
    "dermamnist_ids": ("data/local/dermamnist_split_info.csv", False),
    "ham10000_metadata": ("data/local/HAM10000_metadata.csv", False),
}


def _limits(data) -> archives.Limits:
    return archives.Limits(data.max_member_bytes, data.max_archive_bytes, data.max_compression_ratio)


def ham10000_manifest(data, raw: Path = RAW / "ham10000"):
    """The HAM10000 manifest; what it extracts or generates goes into raw/."""
    if data.source == "demo":
        demo_data.write_demo_ham10000(raw, n_lesions=data.demo_lesions, seed=data.demo_seed, workers=DEMO_WORKERS)
        return sources.read_ham10000(raw)
    return routes.ham10000(data.ham10000_dir, raw, DOWNLOADS, limits=_limits(data))


def external_manifest(data, raw: Path = RAW / "external"):
    if data.external == "none":
        return sources.empty_manifest()
    if data.external == "demo":
        demo_data.write_demo_unified(raw, n_images=data.demo_external_images, seed=data.demo_seed + 1,
                                     workers=DEMO_WORKERS)
        return sources.read_unified(raw)
    return routes.unified(data.external_dir, data.external_split, raw, DOWNLOADS, limits=_limits(data))


def drop_bad_images(frame, name: str, policy: str, require_all_classes: bool, shown=lambda path: path):
    """Decode every image; fail with the list, or drop the bad ones and say how many. shown(path):
    the path to name (the final one, not the temporary folder's)."""
    bad = image_check.bad_images(list(frame["path"]))
    if bad and policy == "fail":
        listing = "\n".join(f"  {shown(path)}: {reason}" for path, reason in bad[:20])
        raise DataError(f"{name}: {len(bad)} unreadable image(s){' (first 20)' if len(bad) > 20 else ''}:\n{listing}\n"
                        "replace them, or set data.bad_images=skip to leave them out")
    if bad:
        print(f"{name}: skipped {len(bad)} unreadable image(s) (data.bad_images=skip)")
    kept = frame[~frame["path"].isin({p for p, _ in bad})].reset_index(drop=True)
    return manifest.validate(kept, what=name, require_all_classes=require_all_classes), [shown(p) for p, _ in bad]


def refuse_copies_in_outputs(data) -> None:
    """Every local copy that is set, whatever the source: a copy kept in an output is deleted by any
    run that writes that output, the demo's too."""
    for key, (safe_place, searched_below) in LOCAL_COPIES.items():
        routes.refuse_copy_in_outputs(f"data.{key}", getattr(data, key), safe_place, searched_below)


def main(args) -> None:
    params = load_params(args.params)
    refuse_copies_in_outputs(params.data)
    finals = (RAW / "ham10000", RAW / "external")
    with atomic.replaced_together(*finals, MANIFESTS) as (*staged, manifests):
        official = dermamnist.empty_split()
        if params.data.source == "dermamnist":
            d = params.data
            ids = lesion_ids.Request(d.dermamnist_ids, d.ham10000_metadata, d.ham10000_dir)
            ham, official = dermamnist.read(d.dermamnist_path, d.dermamnist_size, staged[0], DOWNLOADS,
                                            limits=_limits(d), ids=ids)
            if params.data.external == "demo":
                print(dermamnist.SYNTHETIC_EXTERNAL_NOTE)
        else:
            ham = ham10000_manifest(params.data, staged[0])
        frames = (ham, external_manifest(params.data, staged[1]))
        checked = {}
        for name, frame, tmp, final in zip(("ham10000", "external"), frames, staged, finals):
            kept, bad = drop_bad_images(frame, name, params.data.bad_images, require_all_classes=name == "ham10000",
                                        shown=functools.partial(sources.relocated_path, staged=tmp, final=final))
            checked[name] = (sources.relocated(kept, tmp, final), bad)
            manifest.write(manifests / f"{name}.csv", checked[name][0])
        official = official[official["image_id"].isin(checked["ham10000"][0]["image_id"])]  # without skipped images
        atomic.write_csv(manifests / "official_split.csv", official)
    (ham, ham_bad), (external, external_bad) = checked["ham10000"], checked["external"]
    atomic.write_json("metrics/download.json", {
        "ham10000": {"images": len(ham), "lesions": int(ham["lesion_id"].nunique()), "bad_images_skipped": len(ham_bad),
                     # an image without a lesion id is its own lesion (as splitting.has_lesion_ids reads it)
                     **({"lesion_ids": bool((ham["lesion_id"] != ham["image_id"]).any())}
                        if params.data.source == "dermamnist" else {})},
        "external": {"images": len(external), "bad_images_skipped": len(external_bad)},
        "bad_images": ham_bad + external_bad,
    })
    print(f"ham10000: {len(ham)} images of {ham['lesion_id'].nunique()} lesions; external: {len(external)} images")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))
