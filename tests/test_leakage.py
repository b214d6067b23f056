"""The leakage audit: planted copies of training images are found, distinct images are kept."""

import shutil
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinlesion import leakage
from skinlesion.acquire import demo_data, sources

MAX_BITS, MAX_COLOUR = 48, 6.5  # the committed params.yaml values


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A HAM10000-like set at the real 600x450 size, and a distinct set from another seed."""
    root = tmp_path_factory.mktemp("audit")
    demo_data.write_demo_ham10000(root / "ham", n_lesions=20, seed=1, image_size=(600, 450))
    demo_data.write_demo_ham10000(root / "other", n_lesions=20, seed=2, image_size=(600, 450))
    return root, sources.read_ham10000(root / "ham"), sources.read_ham10000(root / "other")


def plant_copies(ham, folder):
    """Copies of training images as an external set would hold them: renamed, resized
    600x450 -> 1024x768, re-encoded at quality 70, cropped a little, and combinations."""
    folder.mkdir(parents=True, exist_ok=True)
    edits = {
        "renamed": lambda im: im,
        "resized": lambda im: im.resize((1024, 768), Image.Resampling.LANCZOS),
        "crop3": lambda im: im.crop((18, 13, 582, 437)),
        "crop_corner": lambda im: im.crop((12, 9, 600, 450)),
        "crop_side": lambda im: im.crop((0, 0, 570, 450)),
        "crop_resized": lambda im: im.crop((30, 22, 570, 428)).resize((1024, 768)),
    }
    rows = []
    for k, (image_id, path) in enumerate(zip(ham["image_id"], ham["path"])):
        name, edit = list(edits.items())[k % len(edits)]
        with Image.open(path) as im:
            out = folder / f"copy_{k:04d}_{name}.jpg"
            if name == "renamed":
                shutil.copy(path, out)
            else:
                edit(im.convert("RGB")).save(out, quality=70 if k % 2 else 90)
        rows.append({"image_id": out.stem, "path": str(out), "lesion_id": f"external_{out.stem}", "dx": "nv"})
    return rows


def external_frame(rows):

    return pd.DataFrame(rows).assign(dx_type="", age=np.nan, sex="", localization="", mask_path="")


@pytest.mark.slow
def test_planted_copies_are_found_and_distinct_images_kept(sets):
    root, ham, other = sets
    planted = plant_copies(ham, root / "external")
    distinct = [{"image_id": f"distinct_{i}", "path": p, "lesion_id": f"x{i}", "dx": dx}
                for i, (p, dx) in enumerate(zip(other["path"], other["dx"]))]
    by_id = [{"image_id": ham["image_id"].iloc[0].lower() + "_downsampled", "path": other["path"].iloc[0],
              "lesion_id": "y", "dx": "nv"}]
    external = external_frame(planted + distinct + by_id)
    kept, report = leakage.audit_external(ham, external, leakage.signatures(list(ham["path"]), leakage.CROPS),
                                          leakage.signatures(list(external["path"])), MAX_BITS, MAX_COLOUR)
    found = len(planted) - kept["image_id"].str.startswith("copy_").sum()
    assert found / len(planted) >= 0.95, report
    assert kept["image_id"].str.startswith("distinct_").sum() == len(distinct)  # no distinct image removed
    assert report["removed_by_id"] == 1 and report["external_images"] == len(external)
    assert report["kept"] == len(kept) == len(external) - report["removed_by_id"] - report["removed_by_content"]


@pytest.mark.slow
def test_near_duplicates_under_other_lesion_ids_are_reported_and_merged(sets):
    root, ham, _ = sets
    copy = root / "dup.jpg"
    Image.open(ham["path"].iloc[0]).convert("RGB").resize((1024, 768)).save(copy, quality=70)
    twin = ham.iloc[[0]].assign(image_id="ISIC_9999999", path=str(copy), lesion_id="HAM_9999999")
    with_twin = pd.concat([ham, twin], ignore_index=True)
    sig = leakage.signatures(list(with_twin["path"]), leakage.CROPS)
    pairs = leakage.near_duplicates(with_twin, sig, MAX_BITS, MAX_COLOUR)
    assert pairs[["image_a", "image_b"]].values.tolist() == [[ham["image_id"].iloc[0], "ISIC_9999999"]]
    groups = leakage.split_groups(with_twin, pairs, merge=True)
    assert groups.iloc[-1] == groups.iloc[0] == min(ham["lesion_id"].iloc[0], "HAM_9999999")
    assert groups.nunique() == with_twin["lesion_id"].nunique() - 1
    assert leakage.split_groups(with_twin, pairs, merge=False).equals(with_twin["lesion_id"].rename("group"))


def test_isic_ids_are_found_inside_renamed_stems():
    assert leakage.isic_id("isic_0024306_downsampled") == "ISIC_0024306"
    assert leakage.isic_id("img_123") is None


def test_hash_comparison_is_vectorised_and_exact():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2**63, (2000, len(leakage.CROPS), leakage.WORDS), dtype=np.uint64)
    queries = refs[:1000, 0].copy()
    queries[:, 0] ^= np.uint64(0b111)  # 3 bits off the first crop of each reference
    start = time.perf_counter()
    d = leakage.hash_distances(queries, refs)
    assert time.perf_counter() - start < 10  # 24 million comparisons; seconds, not minutes
    assert (d[np.arange(1000), np.arange(1000)] == 3).all()
    assert d[0, 1] == np.bitwise_count(queries[0] ^ refs[1]).sum(-1).min()


def reference_matches(queries, references, max_bits, max_colour):
    """The audit's comparison written the plain way (every query against every crop at once,
    no cache blocking), to prove the blocked one finds exactly the same pairs."""
    m, k = references.hashes.shape[:2]
    flat = references.hashes.reshape(m * k, leakage.WORDS)
    found = []
    for start in range(0, len(queries), 64):
        q = queries.hashes[start:start + 64, 0]
        d = np.bitwise_count(q[:, None, :] ^ flat[None]).sum(-1, dtype=np.uint16).reshape(len(q), m, k).min(-1)
        i, j = np.nonzero(d <= max_bits)
        c = leakage.colour_distances(queries.thumbs[start + i, 0], references.thumbs[j])
        found.append(pd.DataFrame({"query": start + i, "reference": j, "bits": d[i, j].astype(int), "colour": c}))
    frame = pd.concat(found, ignore_index=True)
    return frame[frame["colour"] <= max_colour].reset_index(drop=True)


def planted_signatures(n: int, seed: int) -> leakage.Signatures:
    """Random signatures in which every third image is a near copy (a few bits and colour levels
    off, some near the thresholds) of the one before it."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, (n, len(leakage.CROPS), leakage.WORDS), dtype=np.uint64)
    thumbs = rng.integers(0, 256, (n, len(leakage.CROPS), leakage.THUMB, leakage.THUMB, 3), dtype=np.uint8)
    for a in range(1, n, 3):
        flips = rng.integers(0, 64, 12 + a % 45)  # 12..56 bit positions, so some pairs fall beyond 48 bits
        hashes[a] = hashes[a - 1]
        for bit in flips:
            hashes[a, :, bit % leakage.WORDS] ^= np.uint64(1) << np.uint64(bit)
        thumbs[a] = np.clip(thumbs[a - 1].astype(int) + rng.integers(-8, 9, thumbs[a].shape), 0, 255)
    return leakage.Signatures(hashes, thumbs)


def test_cache_blocked_comparison_gives_exactly_the_pairs_of_the_plain_one(monkeypatch):
    ham, external = planted_signatures(300, 0), planted_signatures(120, 1)
    external.hashes[:40] = ham.hashes[:40]  # external copies of training images
    external.thumbs[:40] = ham.thumbs[:40]
    for queries, references in ((ham, ham), (external, ham)):
        old = reference_matches(queries, references, MAX_BITS, MAX_COLOUR)
        for block, chunk in ((64, leakage.REFERENCE_CHUNK), (7, 1000)):  # uneven blocks: chunk and block edges
            monkeypatch.setattr(leakage, "REFERENCE_CHUNK", chunk)
            new = leakage.matches(queries, references, MAX_BITS, MAX_COLOUR, block=block)
            pd.testing.assert_frame_equal(new, old)
        assert len(old) > len(queries) // 4  # the test compares real matches, not two empty frames


def test_demo_audit_is_unchanged_by_the_cache_blocking(tmp_path, monkeypatch):
    """On demo images (several views per lesion, lookalike lesions) the audit's outputs match the
    plain comparison's: the external images removed, the near-duplicate pairs and the split groups."""
    demo_data.write_demo_ham10000(tmp_path / "ham", n_lesions=40, seed=3, image_size=(160, 120))
    ham = sources.read_ham10000(tmp_path / "ham")
    external = ham.iloc[::4].assign(image_id=lambda f: [f"copy_{k}" for k in range(len(f))])  # no ISIC id: found by content
    sig, ext_sig = leakage.signatures(list(ham["path"]), leakage.CROPS), leakage.signatures(list(external["path"]))
    loose = (MAX_BITS + 40, MAX_COLOUR + 20)  # loose thresholds, so lookalikes match too and groups merge

    def audit():
        kept, report = leakage.audit_external(ham, external, sig, ext_sig, *loose)
        pairs = leakage.near_duplicates(ham, sig, *loose)
        return kept, report, pairs, leakage.split_groups(ham, pairs, merge=True)

    new = audit()
    monkeypatch.setattr(leakage, "matches", reference_matches)
    old = audit()
    pd.testing.assert_frame_equal(new[0], old[0])
    assert new[1] == old[1] and new[1]["removed_by_content"] == len(external)
    pd.testing.assert_frame_equal(new[2], old[2])
    assert len(new[2]) > 0
    pd.testing.assert_series_equal(new[3], old[3])
