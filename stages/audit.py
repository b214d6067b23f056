"""Stage audit: the leakage audit between the training data and the external set.

    python stages/audit.py

Removes every external image that is also a HAM10000 image, by image id or by content (a
perceptual hash confirmed by colour; see skinlesion/leakage.py), and finds near-identical
HAM10000 images filed under different lesion ids. Outputs: data/audit/external.csv (the external
manifest that evaluate reads), data/audit/groups.csv (the groups the split keeps together;
lesions linked by a near-duplicate are merged when audit.merge_near_duplicates),
data/audit/near_duplicates.csv, metrics/leakage.json.
"""

import time

from skinlesion import atomic, cli, leakage, manifest
from skinlesion.params import load_params


def main(args) -> None:
    params = load_params(args.params).audit
    ham = manifest.read("data/manifests/ham10000.csv")
    external = manifest.read("data/manifests/external.csv")
    start = time.perf_counter()
    ham_sig = leakage.signatures(list(ham["path"]), leakage.CROPS)
    external_sig = leakage.signatures(list(external["path"]))
    hashed = time.perf_counter()
    kept, report = leakage.audit_external(ham, external, ham_sig, external_sig,
                                          params.max_hash_distance, params.max_colour_distance)
    duplicates = leakage.near_duplicates(ham, ham_sig, params.max_hash_distance, params.max_colour_distance)
    groups = leakage.split_groups(ham, duplicates, merge=params.merge_near_duplicates)
    report["ham10000_near_duplicate_pairs_with_different_lesion_ids"] = int(len(duplicates))
    report["ham10000_lesions_merged"] = int(ham["lesion_id"].nunique() - groups.nunique())

    manifest.write("data/audit/external.csv", kept)
    atomic.write_csv("data/audit/groups.csv", ham[["image_id", "lesion_id"]].assign(group=groups.to_numpy()))
    atomic.write_csv("data/audit/near_duplicates.csv", duplicates)
    atomic.write_json("metrics/leakage.json", report)
    print(f"external: {report['external_images']} images, removed {report['removed_by_id']} by id and "
          f"{report['removed_by_content']} by content, kept {report['kept']}")
    print(f"ham10000: {len(duplicates)} near-duplicate pair(s) under different lesion ids; "
          f"{report['ham10000_lesions_merged']} lesion(s) merged into others' split groups")
    print(f"hashing {len(ham)} + {len(external)} images took {hashed - start:.1f} s, comparing "
          f"{time.perf_counter() - hashed:.1f} s")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))
