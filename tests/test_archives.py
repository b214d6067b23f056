"""Safe zip extraction: nothing is ever written outside the target."""

import zipfile

import pytest

from skinlesion.acquire.archives import extract
from skinlesion.errors import DataError


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extracts_kept_members_into_the_target(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"HAM10000_images_part_1/ISIC_0024306.jpg": b"x", "hmnist_8_8_L.csv": b"y"})
    n = extract(archive, tmp_path / "out", keep=lambda name: name.endswith(".jpg"))
    assert n == 1
    assert (tmp_path / "out/HAM10000_images_part_1/ISIC_0024306.jpg").read_bytes() == b"x"
    assert not (tmp_path / "out/hmnist_8_8_L.csv").exists()


@pytest.mark.parametrize("evil", ["../escaped.txt", "ok/../../escaped.txt", "/tmp/escaped_abs.txt",
                                  "..\\escaped.txt", "C:/escaped.txt"])
def test_zip_slip_is_rejected_before_anything_is_written(tmp_path, evil):
    archive = make_zip(tmp_path / "evil.zip", {"HAM10000_images_part_1/ISIC_0024306.jpg": b"x", evil: b"pwned"})
    target = tmp_path / "box" / "out"
    with pytest.raises(DataError, match="unsafe member .*nothing was extracted"):
        extract(archive, target)
    assert not target.exists()  # not even the harmless member
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["evil.zip"]


def test_a_symlink_member_is_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("innocent.jpg")
        info.external_attr = (0o120777 << 16)  # a symbolic link, pointing anywhere
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="unsafe member 'innocent.jpg'"):
        extract(archive, tmp_path / "out")


def test_a_corrupt_zip_says_to_download_again(tmp_path):
    bad = tmp_path / "HAM10000_images_part_1.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a valid zip.*download it again"):
        extract(bad, tmp_path / "out")
