"""Stage download: get HAM10000 and the external set, and write their canonical manifests.

    python stages/download.py

data.source=demo generates a synthetic HAM10000 in the Kaggle layout under data/raw/ham10000;
data.source=ham10000 reads the copy in data.ham10000_dir. The external set works the same way
(data.external: demo | unified | none). Outputs: data/raw/, data/manifests/{ham10000,external}.csv.
"""

from pathlib import Path

from skinlesion import atomic, cli, demo_data, manifest, sources
from skinlesion.manifest import DataError
from skinlesion.params import load_params

RAW = Path("data/raw")
MANIFESTS = Path("data/manifests")


def ham10000_manifest(data, seed: int):
    if data.source == "demo":
        with atomic.atomic_dir(RAW / "ham10000") as tmp:
            demo_data.write_demo_ham10000(tmp, n_lesions=data.demo_lesions, seed=seed)
        return sources.read_kaggle_ham10000(RAW / "ham10000")
    if not data.ham10000_dir:
        raise DataError("data.source is ham10000 but data.ham10000_dir is empty; download HAM10000 "
                        "(Kaggle kmader/skin-cancer-mnist-ham10000), extract it, and set data.ham10000_dir to it")
    return sources.read_kaggle_ham10000(Path(data.ham10000_dir))


def external_manifest(data, seed: int):
    if data.external == "none":
        return sources.empty_manifest()
    if data.external == "demo":
        with atomic.atomic_dir(RAW / "external") as tmp:
            demo_data.write_demo_unified(tmp, n_images=data.demo_external_images, seed=seed + 1)
        return sources.read_unified(RAW / "external")
    if not data.external_dir:
        raise DataError("data.external is unified but data.external_dir is empty; download the Kaggle dataset "
                        "cbames/unified-dataset-for-skin-cancer-classification, extract it, and set data.external_dir")
    return sources.read_unified(Path(data.external_dir))


def main(args) -> None:
    params = load_params(args.params)
    for folder in ("ham10000", "external"):  # DVC outputs, so they exist even when unused
        (RAW / folder).mkdir(parents=True, exist_ok=True)
    ham = ham10000_manifest(params.data, params.seed)
    external = external_manifest(params.data, params.seed)
    manifest.write(MANIFESTS / "ham10000.csv", ham)
    manifest.write(MANIFESTS / "external.csv", external)
    print(f"ham10000: {len(ham)} images of {ham['lesion_id'].nunique()} lesions; external: {len(external)} images")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))
