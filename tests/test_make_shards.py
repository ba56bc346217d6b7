"""tools/make_shards.py end to end on tiny real videos: splits, shard contents, rerun, kill, bad input."""
from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset
from av.video.frame import PictureType

from pipeline.layouts import DatasetListing, SourceVideo
from pipeline.manifest import SPLITS, ManifestError, load_manifest
from pipeline.video_encode import EncodeSettings, encode_video, encode_video_bytes
from pipeline.dali_index import dali_index_text
from tools.make_shards import ShardSettings, assign_splits, main, sample_key, transcode

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["Hammering", "HammerThrow", "Walk"]  # classInd order (case-insensitive), not sorted()


def clip(frames: int, width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """A moving square on a flat background: real motion, cheap to encode."""
    video = np.full((frames, height, width, 3), 30 + 10 * (seed % 8), np.uint8)
    for t in range(frames):
        x = (3 * t + seed) % (width - 16)
        video[t, 8:24, x:x + 16] = (220, 60 + 20 * (seed % 5), 40)
    return video


def make_ucf(root: Path, groups: int = 3, clips: int = 4, size: tuple[int, int] = (64, 48),
             extra_train: dict[str, bytes] | None = None, listed_missing: tuple[str, ...] = ()) -> dict[str, int]:
    """Mini UCF-101 (group g01 = test of split 1); every clip has a different length (16..20 frames at
    15 fps) so a sample can be matched to its source. Returns {rel path: source frame count}."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for i, c in enumerate(CLASSES, 1)).encode())
    train, test, frame_counts = [], [], {}
    for index, name in enumerate(CLASSES, 1):
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi"
                frames = 16 + len(frame_counts) % 5
                encode_video(clip(frames, *size, seed=len(frame_counts)), root / "UCF-101" / rel,
                             EncodeSettings(codec="mpeg4", fps=15))
                frame_counts[f"UCF-101/{rel}"] = frames
                (test.append(rel) if g == 1 else train.append(f"{rel} {index}"))
    for rel, data in (extra_train or {}).items():
        (root / "UCF-101" / rel).write_bytes(data)
        train.append(f"{rel} {CLASSES.index(rel.split('/')[0]) + 1}")
    train += [f"{rel} 1" for rel in listed_missing]
    (lists / "trainlist01.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
    (lists / "testlist01.txt").write_bytes("\r\n".join(test).encode())
    return frame_counts


def shard_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--layout", "ucf101", "--root", str(root), "--out", str(out), "--short-side", "32",
            "--samples-per-shard", "4", "--label-fraction", "0.5", "--val-fraction", "0.25", *extra]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    frame_counts = make_ucf(root)
    out = tmp_path_factory.mktemp("shards") / "ucf101"
    assert main(shard_args(root, out, "--workers", "2")) == 0
    return root, out, frame_counts


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def decode(video: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(video)) as container:
        return list(container.decode(video=0))


# --- split assignment ----------------------------------------------------------------------------

def listing_of(counts: dict[str, int]) -> DatasetListing:
    videos = [SourceVideo(Path(f"/x/{c}/{i}.avi"), f"{c}/{i}.avi", c, "train") for c, n in counts.items()
              for i in range(n)]
    videos.append(SourceVideo(Path("/x/t.avi"), "t.avi", "a", "test"))
    return DatasetListing("folder", Path("/x"), list(counts), videos)


def test_assign_splits_is_stratified_seeded_and_keeps_one_labelled_per_class():
    listing = listing_of({"a": 100, "b": 10, "c": 1, "d": 2})
    splits, skipped = assign_splits(listing, label_fraction=0.1, val_fraction=0.2, seed=0)
    per_class = {split: {c: sum(v.class_name == c for v in videos) for c in "abcd"} for split, videos in splits.items()}
    assert per_class["labelled"] == {"a": 8, "b": 1, "c": 1, "d": 1}
    assert per_class["val"] == {"a": 2, "b": 0, "c": 0, "d": 0}
    assert per_class["unlabelled"] == {"a": 90, "b": 9, "c": 0, "d": 1}
    assert [v.rel_path for v in splits["test"]] == ["t.avi"] and not skipped
    all_train = [v.rel_path for s in ("labelled", "val", "unlabelled") for v in splits[s]]
    assert len(all_train) == len(set(all_train)) == 113
    again, _ = assign_splits(DatasetListing("folder", Path("/x"), listing.classes, listing.videos[::-1]), 0.1, 0.2, 0)
    assert {s: sorted(v.rel_path for v in vs) for s, vs in again.items()} == \
           {s: sorted(v.rel_path for v in vs) for s, vs in splits.items()}  # listing order does not matter
    other, _ = assign_splits(listing, 0.1, 0.2, seed=1)
    assert {v.rel_path for v in other["labelled"]} != {v.rel_path for v in splits["labelled"]}


# --- one video -----------------------------------------------------------------------------------

@pytest.mark.parametrize("source_fps, source_frames, max_frames, expected", [
    (25, 25, None, 15),  # 1 s at 25 fps -> 15 frames (dropped)
    (10, 10, None, 15),  # 1 s at 10 fps -> 15 frames (duplicated)
    (15, 20, 12, 12),
])
def test_transcode_resamples_fps_resizes_and_sets_gop(tmp_path, source_fps, source_frames, max_frames, expected):
    path = tmp_path / "v.avi"
    encode_video(clip(source_frames, 96, 72), path, EncodeSettings(codec="mpeg4", fps=source_fps))
    settings = ShardSettings(dataset="t", short_side=32, fps=15, gop=4, max_frames=max_frames)
    video, frames, width, height = transcode(path, settings)
    assert (frames, width, height) == (expected, 42, 32)
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert abs(float(stream.average_rate) - 15) < 1e-6
        packets = [p for p in container.demux(stream) if p.size]
        assert [i for i, p in enumerate(packets) if p.is_keyframe] == list(range(0, expected, 4))
    decoded = decode(video)
    assert len(decoded) == expected and all(f.pict_type != PictureType.B for f in decoded)


# --- shard round trip ----------------------------------------------------------------------------

def test_every_source_once_in_the_right_split_with_the_right_label(sharded):
    root, out, frame_counts = sharded
    manifest = load_manifest(out)
    assert manifest.classes == CLASSES and manifest.dataset == "ucf101" and manifest.layout == "ucf101"
    assert manifest.encode.codec == "h264" and manifest.encode.container == "mp4" and manifest.encode.gop == 8
    assert not manifest.skipped
    seen: dict[str, str] = {}
    for split in SPLITS:
        per_class = [0] * len(CLASSES)
        for shard, path in zip(manifest.splits[split].shards, manifest.shard_paths(split)):
            data = path.read_bytes()
            assert len(data) == shard.bytes and hashlib.sha256(data).hexdigest() == shard.sha256
            samples = read_shard(path)
            assert len(samples) == shard.samples
            for key, members in samples.items():
                assert set(members) == {"mp4", "json"}
                meta = json.loads(members["json"])
                assert key == sample_key("ucf101", meta["source"]) and meta["split"] == split
                assert meta["source"] not in seen, "a source video is in two samples"
                seen[meta["source"]] = split
                assert meta["class_name"] == meta["source"].split("/")[1] == CLASSES[meta["label"]]
                frames = decode(members["mp4"])
                assert len(frames) == meta["frames"] == frame_counts[meta["source"]]  # 15 fps in, 15 fps out
                assert (frames[0].width, frames[0].height) == (meta["width"], meta["height"]) == (42, 32)
                per_class[meta["label"]] += 1
        assert per_class == manifest.splits[split].per_class
    assert seen.keys() == frame_counts.keys()
    assert {s for src, s in seen.items() if "_g01_" in src} == {"test"}
    assert [manifest.splits[s].samples for s in SPLITS] == [9, 12, 3, 12]  # 8 train/class: 4 labelled (1 val)


def test_shards_are_readable_by_webdataset_and_indexed_for_dali(sharded):
    _, out, frame_counts = sharded
    manifest = load_manifest(out)
    urls = [str(p) for split in SPLITS for p in manifest.shard_paths(split)]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert len(samples) == len(frame_counts)
    assert all(json.loads(s["json"])["label"] in range(3) and s["mp4"][4:8] == b"ftyp" for s in samples)
    for tar_path, idx_path in zip(manifest.shard_paths("labelled"), manifest.index_paths("labelled")):
        index = idx_path.read_text()
        assert index == dali_index_text(tar_path)  # DALI's wds2idx and our reading of the tar agree
        header, *lines = index.splitlines()
        assert header == f"v1.2 {len(lines)}"
        data = tar_path.read_bytes()
        members = read_shard(tar_path)
        for line in lines:
            fields = line.split()
            for ext, offset, size, name in zip(*[iter(fields)] * 4):
                assert data[int(offset):int(offset) + int(size)] == members[name.split(".")[0]][ext]


def test_rerun_rewrites_only_the_deleted_or_damaged_shards(sharded, tmp_path, capsys):
    root, first_out, _ = sharded
    out = tmp_path / "ucf101"
    for path in first_out.iterdir():
        (out / path.name).parent.mkdir(exist_ok=True)
        (out / path.name).write_bytes(path.read_bytes())
    before = json.loads((out / "manifest.json").read_text())
    (out / "labelled-000001.tar").unlink()
    damaged = bytearray((out / "test-000000.tar").read_bytes())
    damaged[2000] ^= 0xFF
    (out / "test-000000.tar").write_bytes(bytes(damaged))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    capsys.readouterr()
    assert main(shard_args(root, out, "--workers", "1")) == 0
    assert "(8 already complete, 2 to write)" in capsys.readouterr().out
    changed = {p.name for p in out.glob("*.tar") if p.stat().st_mtime_ns != mtimes.get(p.name)}
    assert changed == {"labelled-000001.tar", "test-000000.tar"}
    after = json.loads((out / "manifest.json").read_text())
    assert after == before  # fixed tar metadata and a deterministic encoder: identical bytes


def test_vp9_writes_webm_members(tmp_path):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    assert main(shard_args(root, tmp_path / "vp", "--codec", "vp9", "--workers", "1")) == 0
    manifest = load_manifest(tmp_path / "vp")
    assert (manifest.encode.codec, manifest.encode.container) == ("vp9", "webm")
    samples = read_shard(manifest.shard_paths("test")[0])
    for members in samples.values():
        assert set(members) == {"webm", "json"}
        with av.open(io.BytesIO(members["webm"])) as container:
            assert container.streams.video[0].codec_context.name == "vp9"
            assert len(list(container.decode(video=0))) == json.loads(members["json"])["frames"]


def test_dali_reads_vp9_shards_through_the_index_and_decodes_on_cpu(tmp_path):
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=2)
    assert main(shard_args(root, tmp_path / "vp", "--codec", "vp9", "--workers", "1", "--label-fraction", "1",
                           "--val-fraction", "0")) == 0
    manifest = load_manifest(tmp_path / "vp")
    paths = [str(p) for p in manifest.shard_paths("labelled")]
    index_paths = [str(p) for p in manifest.index_paths("labelled")]

    @dali.pipeline_def(batch_size=manifest.splits["labelled"].samples, num_threads=1, device_id=None)
    def reader():
        video, meta = fn.readers.webdataset(paths=paths, index_paths=index_paths, ext=["webm", "json"], name="shards")
        return fn.decoders.video(video, device="cpu"), meta

    pipe = reader()
    pipe.build()
    assert pipe.epoch_size("shards") == manifest.splits["labelled"].samples == 6
    frames, metas = pipe.run()
    sources = set()
    for i in range(len(frames)):
        meta = json.loads(bytes(np.array(metas[i])).decode())
        assert tuple(frames[i].shape()) == (meta["frames"], meta["height"], meta["width"], 3)
        sources.add(meta["source"])
    assert len(sources) == 6


# --- a kill in the middle, then a rerun ----------------------------------------------------------

def test_sigkill_mid_run_then_rerun_gives_complete_unique_shards(tmp_path):
    root = tmp_path / "ucf"
    frame_counts = make_ucf(root, groups=4, clips=4, size=(320, 240))
    out = tmp_path / "shards" / "ucf101"
    command = [sys.executable, str(REPO / "tools" / "make_shards.py"),
               *shard_args(root, out, "--workers", "1", "--samples-per-shard", "2", "--short-side", "64")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (list(out.glob("*.json")) and list(out.glob("*.tar.tmp"))):  # inside a shard, after one finished
        assert process.poll() is None, f"make_shards ended before the kill: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    finished_before = {p.stem for p in out.glob("*.json")}
    for tar_path in out.glob("*.tar"):  # no half shard under a final name
        if tar_path.with_suffix(".json").exists():
            sidecar = json.loads(tar_path.with_suffix(".json").read_text())
            assert hashlib.sha256(tar_path.read_bytes()).hexdigest() == sidecar["sha256"]
        else:  # killed between the rename and the sidecar: whole, but the rerun rewrites it anyway
            assert len(read_shard(tar_path)) == 2

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"({len(finished_before)} already complete" in result.stdout
    manifest = load_manifest(out)
    assert not list(out.glob("*.tmp"))
    keys, sources = [], []
    for split in SPLITS:
        for shard, path in zip(manifest.splits[split].shards, manifest.shard_paths(split)):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard.sha256
            for key, members in read_shard(path).items():
                keys.append(key)
                sources.append(json.loads(members["json"])["source"])
                assert len(decode(members["mp4"])) == json.loads(members["json"])["frames"]
    assert len(keys) == len(set(keys)) and sorted(sources) == sorted(frame_counts)
    shard_names = [s.file[:-4] for split in SPLITS for s in manifest.splits[split].shards]
    assert {p.name for p in out.iterdir()} == {"manifest.json"} | {
        f"{name}.{ext}" for name in shard_names for ext in ("tar", "idx", "json")}


# --- bad input -----------------------------------------------------------------------------------

def test_bad_videos_are_skipped_with_reasons_and_the_job_goes_on(tmp_path, capsys):
    good = encode_video_bytes(clip(20), EncodeSettings(codec="h264", fps=15))
    bad = {
        "Walk/zero_bytes.avi": b"",
        "Walk/not_a_video.avi": b"this is a text file, not an AVI\n" * 20,
        "Walk/truncated.mp4": good[: len(good) // 2],  # the mp4 index (moov) is at the end: cut off
        "Walk/too_short.avi": encode_video_bytes(clip(4), EncodeSettings(codec="mpeg4", fps=15)),
    }
    root = tmp_path / "ucf"
    frame_counts = make_ucf(root, groups=2, clips=2, extra_train=bad, listed_missing=("Walk/never_downloaded.avi",))
    out = tmp_path / "out"
    assert main(shard_args(root, out, "--workers", "2")) == 0
    printed = capsys.readouterr().out
    manifest = load_manifest(out)
    reasons = {item.source: item.reason for item in manifest.skipped}
    assert set(reasons) == {f"UCF-101/{rel}" for rel in [*bad, "Walk/never_downloaded.avi"]}
    assert reasons["UCF-101/Walk/never_downloaded.avi"] == "listed but missing"
    assert "0 bytes" in reasons["UCF-101/Walk/zero_bytes.avi"]
    assert reasons["UCF-101/Walk/not_a_video.avi"].startswith("cannot decode")
    assert reasons["UCF-101/Walk/truncated.mp4"].startswith("cannot decode")
    assert reasons["UCF-101/Walk/too_short.avi"].startswith("too short: 4 frames")
    for source, reason in reasons.items():
        assert f"skipped {source}: {reason}" in printed
    assert sum(manifest.splits[s].samples for s in SPLITS) == len(frame_counts)


def test_missing_split_file_stops_before_writing(tmp_path, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    (root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    assert main(shard_args(root, tmp_path / "out")) == 2
    assert "testlist01.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_layout_lists_the_allowed_layouts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--layout", "ucf", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'ucf'" in err and all(name in err for name in ("ucf101", "hmdb51", "kinetics", "ssv2"))


def test_load_manifest_errors_name_the_file_and_key(sharded, tmp_path):
    _, out, _ = sharded
    with pytest.raises(ManifestError, match=f"manifest not found: {tmp_path}"):
        load_manifest(tmp_path)
    data = json.loads((out / "manifest.json").read_text())
    del data["splits"]["val"]["per_class"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"manifest\.json: missing key 'splits\.val\.per_class'"):
        load_manifest(tmp_path)
    data = json.loads((out / "manifest.json").read_text())
    data["splits"]["test"]["shards"][0]["samples"] = "4"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"'splits\.test\.shards\[0\]\.samples' must be int"):
        load_manifest(tmp_path)
    assert load_manifest(out).num_classes == 3


# --- label-changing augmentations ----------------------------------------------------------------

def test_ssv2_default_flags_mark_flip_and_time_reversal_as_label_changing(tmp_path):
    from tests.test_layouts import make_ssv2
    root = make_ssv2(tmp_path / "ssv2")
    out = tmp_path / "shards" / "ssv2"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "make_shards.py"), "--layout", "ssv2",
                             "--root", str(root), "--out", str(out), "--short-side", "32", "--workers", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(out)
    assert manifest.hflip_changes_label is True  # "left to right" <-> "right to left"
    assert manifest.time_reversal_changes_label is True  # played backwards, the same pair swaps
    assert sum(info.samples for info in manifest.splits.values()) == 3


# --- never succeed with nothing ------------------------------------------------------------------

def test_all_missing_exits_non_zero_naming_the_folder_the_missing_and_where_videos_are(tmp_path, capsys):
    from tests.test_layouts import make_hmdb51
    root = make_hmdb51(tmp_path / "hmdb", "data/hmdb51_org")  # two levels down: not where archives unpack
    out = tmp_path / "out"
    assert main(["--layout", "hmdb51", "--root", str(root), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "official train: 3 of 3 missing (100%)" in err and "official test: 3 of 3 missing (100%)" in err
    assert f"searched: {root}\n" in err
    missing_line = next(line for line in err.splitlines() if "missing, e.g.:" in line)
    assert missing_line.count(f"{root}/") == 3 and "cartwheel/(Rad)Schlag_die_Bank!" in missing_line
    assert f"folders that hold videos: {root / 'data' / 'hmdb51_org'} (9 videos in 3 subfolders)" in err
    assert "--videos-dir" in err
    assert not out.exists()  # nothing written
    assert main(["--layout", "hmdb51", "--root", str(root), "--out", str(out), "--workers", "1", "--short-side", "32",
                 "--videos-dir", str(root / "data" / "hmdb51_org")]) == 0
    assert load_manifest(out).video_dirs == {"train": str(root / "data" / "hmdb51_org"),
                                             "test": str(root / "data" / "hmdb51_org")}


def test_missing_fraction_threshold_and_a_few_missing_are_skipped_and_recorded(tmp_path, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1, listed_missing=tuple(f"Walk/gone_{i}.avi" for i in range(4)))  # 4 of 7 train
    out = tmp_path / "out"
    assert main(shard_args(root, out, "--workers", "1")) == 1
    err = capsys.readouterr().err
    assert "official train: 4 of 7 missing (57%)" in err and "official test" not in err and not out.exists()
    assert main(shard_args(root, out, "--workers", "1", "--max-missing-fraction", "0.6")) == 0
    manifest = load_manifest(out)
    assert sorted(item.source for item in manifest.skipped) == [f"UCF-101/Walk/gone_{i}.avi" for i in range(4)]
    assert sum(info.samples for info in manifest.splits.values()) == 6
    assert manifest.video_dirs == {"train": str(root / "UCF-101"), "test": str(root / "UCF-101")}


def test_a_split_that_no_video_survives_encoding_stops_without_a_manifest(tmp_path, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    for path in (root / "UCF-101").rglob("*_g01_*.avi"):  # every official test video is garbage
        path.write_bytes(b"not a video\n" * 50)
    out = tmp_path / "out"
    assert main(shard_args(root, out, "--workers", "1")) == 1
    err = capsys.readouterr().err
    assert "split 'test': none of its 3 videos could be encoded (3 cannot decode)" in err
    assert not (out / "manifest.json").exists()


def test_layout_auto_says_what_it_found_or_which_markers_it_looked_for(tmp_path, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    assert main(["--layout", "auto", "--root", str(root), "--out", str(tmp_path / "out"), "--dry-run",
                 "--workers", "1"]) == 0
    assert f"layout: ucf101 (found {root / 'ucfTrainTestlist'})" in capsys.readouterr().out
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    assert main(["--layout", "auto", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "cannot detect the layout" in err
    for marker in ("ucfTrainTestlist", "testTrainMulti_7030_splits", "annotations/train.csv", "labels/labels.json",
                   "something-something-v2-labels.json", "class folders"):
        assert marker in err


# --- dry run -------------------------------------------------------------------------------------

def dry_run_counts(stdout: str) -> dict[str, dict[str, int]]:
    """{class: {split: samples}} from the dry run's table (class names may hold spaces: they come last)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == [*SPLITS, "class"]) + 1
    counts = {}
    for line in lines[start:]:
        if not line.strip():
            break
        *numbers, name = line.split(maxsplit=len(SPLITS))
        counts[name] = dict(zip(SPLITS, map(int, numbers)))
    return counts


def test_dry_run_prints_the_counts_the_real_run_records_and_writes_nothing(tiny_raw, tiny_shards, tmp_path):
    from conftest import DATASETS
    for name, (layout, flags) in DATASETS.items():
        out = tmp_path / name
        result = subprocess.run([sys.executable, "tools/make_shards.py", "--layout", layout, "--root",
                                 str(tiny_raw / name), "--out", str(out), "--val-fraction", "0.25", "--workers", "2",
                                 "--samples-per-shard", "8", "--dry-run", *flags],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert not out.exists()
        manifest = load_manifest(tiny_shards[name])
        counts = dry_run_counts(result.stdout)
        assert counts.pop("(all classes)") == {split: manifest.splits[split].samples for split in SPLITS}, name
        assert list(counts) == manifest.classes
        for split in SPLITS:
            assert [counts[c][split] for c in manifest.classes] == manifest.splits[split].per_class, (name, split)
        missing = [item for item in manifest.skipped if item.reason == "listed but missing"]
        assert f"missing      {len(missing):>7}" in result.stdout
        assert f"would write: labelled {len(manifest.splits['labelled'].shards)} shards" in result.stdout


def test_dry_run_names_unreadable_sources(tmp_path):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=2, extra_train={"Walk/zero_bytes.avi": b"", "Walk/text.avi": b"hello\n" * 100})
    result = subprocess.run([sys.executable, "tools/make_shards.py", *shard_args(root, tmp_path / "out"), "--dry-run"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "unreadable         2" in result.stdout
    assert "UCF-101/Walk/zero_bytes.avi: empty file (0 bytes)" in result.stdout
    assert "UCF-101/Walk/text.avi: cannot decode" in result.stdout
    assert not (tmp_path / "out").exists()
