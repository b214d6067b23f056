"""Stage download: get HAM10000 and the external set, check every image, write their manifests.

    python stages/download.py

data.source=demo generates a synthetic HAM10000 in the Kaggle layout under data/raw/ham10000;
data.source=ham10000 tries, in order: the local copy in data.ham10000_dir (extracted or zipped),
Harvard Dataverse, the Kaggle API (see skinlesion/routes.py). data.external: demo | unified | none,
where unified reads data.external_dir or uses the Kaggle API. Every image is decoded once
(data.bad_images: fail | skip). Outputs: data/raw/, data/manifests/{ham10000,external}.csv,
metrics/download.json.
"""

from pathlib import Path

from skinlesion import atomic, cli, demo_data, image_check, manifest, routes, sources
from skinlesion.errors import DataError
from skinlesion.params import load_params

RAW = Path("data/raw")
MANIFESTS = Path("data/manifests")
DOWNLOADS = Path("data/downloads")  # verified downloads, kept across reruns; not a DVC output


def ham10000_manifest(data, seed: int):
    if data.source == "demo":
        with atomic.atomic_dir(RAW / "ham10000") as tmp:
            demo_data.write_demo_ham10000(tmp, n_lesions=data.demo_lesions, seed=seed)
        return sources.read_ham10000(RAW / "ham10000")
    return routes.ham10000(data.ham10000_dir, RAW / "ham10000", DOWNLOADS)


def external_manifest(data, seed: int):
    if data.external == "none":
        return sources.empty_manifest()
    if data.external == "demo":
        with atomic.atomic_dir(RAW / "external") as tmp:
            demo_data.write_demo_unified(tmp, n_images=data.demo_external_images, seed=seed + 1)
        return sources.read_unified(RAW / "external")
    return routes.unified(data.external_dir, data.external_split, RAW / "external", DOWNLOADS)


def drop_bad_images(frame, name: str, policy: str, require_all_classes: bool):
    """Decode every image; fail with the list, or drop the bad ones and say how many."""
    bad = image_check.bad_images(list(frame["path"]))
    if bad and policy == "fail":
        listing = "\n".join(f"  {path}: {reason}" for path, reason in bad[:20])
        raise DataError(f"{name}: {len(bad)} unreadable image(s){' (first 20)' if len(bad) > 20 else ''}:\n{listing}\n"
                        "replace them, or set data.bad_images=skip to leave them out")
    if bad:
        print(f"{name}: skipped {len(bad)} unreadable image(s) (data.bad_images=skip)")
    kept = frame[~frame["path"].isin({p for p, _ in bad})].reset_index(drop=True)
    return manifest.validate(kept, what=name, require_all_classes=require_all_classes), [p for p, _ in bad]


def main(args) -> None:
    params = load_params(args.params)
    ham = ham10000_manifest(params.data, params.seed)
    external = external_manifest(params.data, params.seed)
    ham, ham_bad = drop_bad_images(ham, "ham10000", params.data.bad_images, require_all_classes=True)
    external, external_bad = drop_bad_images(external, "external", params.data.bad_images, require_all_classes=False)
    for folder in ("ham10000", "external"):  # DVC outputs, so they exist even when a copy is read in place
        (RAW / folder).mkdir(parents=True, exist_ok=True)
    manifest.write(MANIFESTS / "ham10000.csv", ham)
    manifest.write(MANIFESTS / "external.csv", external)
    atomic.write_json("metrics/download.json", {
        "ham10000": {"images": len(ham), "lesions": int(ham["lesion_id"].nunique()), "bad_images_skipped": len(ham_bad)},
        "external": {"images": len(external), "bad_images_skipped": len(external_bad)},
        "bad_images": ham_bad + external_bad,
    })
    print(f"ham10000: {len(ham)} images of {ham['lesion_id'].nunique()} lesions; external: {len(external)} images")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))
