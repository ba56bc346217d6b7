"""Reading tar shards through their DALI index files: the index reader agrees with the tar, and a
reader by index yields the same samples as webdataset's scan while reading only what it loads."""
import tarfile

import pytest

from pipeline.dali_index import IndexFormatError, read_index
from pipeline.shard_reader import MEMBERS, ShardReader, ShardReadError
from tests.shard_fixture import FixtureSpec, write_shard_set


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return write_shard_set(tmp_path_factory.mktemp("reader"), FixtureSpec(splits={"labelled": 6}, samples_per_shard=3,
                                                                          frames=(12,)))


def shards(shard_dir):
    return sorted(str(path) for path in shard_dir.glob("labelled-*.tar"))


def test_index_lists_every_member_where_the_tar_holds_it(shard_dir):
    for url in shards(shard_dir):
        entries = read_index(url[:-4] + ".idx")
        with tarfile.open(url) as tar:
            members = [m for m in tar if m.isreg()]
        listed = [(entry.key + "." + ext, offset, size) for entry in entries for ext, offset, size in entry.members]
        assert listed == [(m.name, m.offset_data, m.size) for m in members]


def test_by_index_and_by_scan_yield_the_same_samples(shard_dir):
    urls = shards(shard_dir)
    by_index = ShardReader({url: url[:-4] + ".idx" for url in urls})
    by_scan = ShardReader()
    listed = list(by_index.samples(urls))
    assert by_index.bytes_read == 0 and all(MEMBERS in sample for sample in listed)  # listing reads no tar byte
    scanned = list(by_scan.samples(urls))
    assert by_scan.bytes_read == sum(len(open(url, "rb").read()) for url in urls)  # the scan reads every tar byte
    loaded = [by_index.load(sample) for sample in listed]
    assert [(s["__key__"], s["__url__"], s["mp4"], s["json"]) for s in loaded] == \
           [(s["__key__"], s["__url__"], s["mp4"], s["json"]) for s in scanned]
    assert by_index.bytes_read == sum(len(s["mp4"]) + len(s["json"]) for s in loaded)
    by_index.close()


def test_a_malformed_or_stale_index_is_an_error_naming_the_file(shard_dir, tmp_path):
    url = shards(shard_dir)[0]
    bad = tmp_path / "bad.idx"
    bad.write_text("v1.2 1\nmp4 512 100\n")
    with pytest.raises(IndexFormatError, match="bad.idx:2"):
        read_index(bad)
    bad.write_text("v1.0 1\n")
    with pytest.raises(IndexFormatError, match="v1.2"):
        read_index(bad)
    stale = tmp_path / "stale.idx"
    stale.write_text(open(url[:-4] + ".idx").read().replace(" 512 ", " 99999999 ", 1))
    with pytest.raises(ShardReadError, match="out of date"):
        list(ShardReader({url: str(stale)}).samples([url]))


def test_an_index_that_no_longer_matches_its_tar_is_noticed(shard_dir, tmp_path):
    import io
    import shutil

    from pipeline.dali_index import index_mismatch

    url = shards(shard_dir)[0]
    idx = url[:-4] + ".idx"
    assert index_mismatch(idx, url, 3) is None
    assert "expected 'v1.2 4'" in index_mismatch(idx, url, 4)
    rewritten = tmp_path / "rewritten.tar"  # the first video cut to a third, as a repaired or damaged copy would be
    with tarfile.open(url) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(rewritten, "w", format=tarfile.USTAR_FORMAT) as tar:
        for number, (member, data) in enumerate(members):
            data = data[: len(data) // 3] if number == 0 else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    assert "holds no member" in index_mismatch(idx, rewritten, 3)
    shutil.copy(url, tmp_path / "appended.tar")
    with tarfile.open(tmp_path / "appended.tar", "a") as tar:
        info = tarfile.TarInfo("extra.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    assert "goes on after" in index_mismatch(idx, tmp_path / "appended.tar", 3)
