"""Parsers of the official dataset layouts, on mini copies built in tmp_path with real tiny videos."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pipeline.layouts import (LAYOUTS, LISTED_BUT_MISSING, LayoutError, detect_layout, read_layout)
from pipeline.video_encode import EncodeSettings, encode_video_bytes


@lru_cache(maxsize=None)
def tiny_video(codec: str = "mpeg4", frames: int = 16, fps: float = 25.0) -> bytes:
    """A real 64x48 clip with a moving square (one encode, copied to every path that needs a video)."""
    clip = np.zeros((frames, 48, 64, 3), np.uint8)
    for t in range(frames):
        clip[t, 10:26, 2 + 2 * t:18 + 2 * t] = (200, 80, 40)
    return encode_video_bytes(clip, EncodeSettings(codec=codec, fps=fps, gop=8))


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def crlf(lines: list[str], final_newline: bool = True) -> bytes:
    return ("\r\n".join(lines) + ("\r\n" if final_newline else "")).encode()


# --- UCF-101 -------------------------------------------------------------------------------------

# classInd order is case-insensitive: Python's sorted() would put HammerThrow before Hammering
UCF_CLASSES = ["ApplyEyeMakeup", "Hammering", "HammerThrow", "HandstandPushups"]


def make_ucf101(root: Path, groups: int = 3, clips: int = 2, missing: tuple[str, ...] = (),
                video_subdir: str = "UCF-101") -> Path:
    """UCF-101 + ucfTrainTestlist (CRLF, 1-based, testlists unlabelled without a final newline);
    group g01 is test in split 1, g02 in split 2. Paths in `missing` are listed but not written.
    Videos go to `<root>/<video_subdir>/<Class>/`."""
    lists = root / "ucfTrainTestlist"
    put(lists / "classInd.txt", crlf([f"{i} {name}" for i, name in enumerate(UCF_CLASSES, 1)]))
    for split_id in (1, 2):
        train, test = [], []
        for index, name in enumerate(UCF_CLASSES, 1):
            file_class = "HandStandPushups" if name == "HandstandPushups" else name  # the real quirk
            for g in range(1, groups + 1):
                for c in range(1, clips + 1):
                    rel = f"{name}/v_{file_class}_g{g:02d}_c{c:02d}.avi"
                    if rel not in missing:
                        put(root / video_subdir / rel, tiny_video())
                    (test.append(rel) if g == split_id else train.append(f"{rel} {index}"))
        put(lists / f"trainlist{split_id:02d}.txt", crlf(train))
        put(lists / f"testlist{split_id:02d}.txt", crlf(test, final_newline=False))
    return root


def test_ucf101_classes_follow_classind_and_folder_not_file_name(tmp_path):
    listing = read_layout("ucf101", make_ucf101(tmp_path))
    assert listing.classes == UCF_CLASSES
    assert listing.classes != sorted(UCF_CLASSES)
    handstand = [v for v in listing.videos if "v_HandStandPushups_" in v.rel_path]
    assert len(handstand) == 6 and {v.class_name for v in handstand} == {"HandstandPushups"}
    assert all(v.path.is_file() and v.path == tmp_path / v.rel_path for v in listing.videos)
    assert all(v.rel_path.startswith("UCF-101/") and "\r" not in v.rel_path for v in listing.videos)


def test_ucf101_split_ids_choose_the_test_groups(tmp_path):
    make_ucf101(tmp_path)
    for split_id in (1, 2):
        listing = read_layout("ucf101", tmp_path, split_id=split_id)
        test = [v for v in listing.videos if v.official_split == "test"]
        train = [v for v in listing.videos if v.official_split == "train"]
        assert len(test) == 8 and len(train) == 16  # last testlist line has no newline: still read
        assert all(f"_g{split_id:02d}_" in v.rel_path for v in test)
        assert not any(f"_g{split_id:02d}_" in v.rel_path for v in train)


def test_ucf101_missing_split_file_and_bad_split_id_are_clear(tmp_path):
    make_ucf101(tmp_path)
    with pytest.raises(LayoutError, match="trainlist03.txt"):
        read_layout("ucf101", tmp_path, split_id=3)
    with pytest.raises(LayoutError, match="allowed values are 1, 2, 3"):
        read_layout("ucf101", tmp_path, split_id=4)
    with pytest.raises(LayoutError, match="UCF-101"):
        read_layout("ucf101", tmp_path / "ucfTrainTestlist")


def test_ucf101_listed_but_missing_is_reported_not_fatal(tmp_path):
    gone = "Hammering/v_Hammering_g02_c01.avi"
    listing = read_layout("ucf101", make_ucf101(tmp_path, missing=(gone,)))
    assert [(m.rel_path, m.reason) for m in listing.missing] == [(f"UCF-101/{gone}", LISTED_BUT_MISSING)]
    assert len(listing.videos) == 23


# --- HMDB-51 -------------------------------------------------------------------------------------

HMDB_CLIPS = {  # odd characters of real HMDB names: ( ) ! & ; @ [ ] # +
    "cartwheel": ["(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi",
                  "Jay_Leno_@_Show;_cartwheel_f_cm_np2_le_med_1.avi",
                  "Flip_[HD]_cartwheel_f_nm_np1_ri_goo_2.avi"],
    "kick_ball": ["Goal_1_&_2_kick_ball_f_cm_np3_ri_med_3.avi", "#20_Kick+_kick_ball_u_nm_np1_fr_goo_0.avi",
                  "Smile_-]_kick_ball_h_nm_np1_fr_goo_0.avi"],
    "shoot_ball": ["a_shoot_ball_u_cm_np1_ba_med_6.avi", "b_shoot_ball_u_cm_np1_ba_med_7.avi",
                   "c_shoot_ball_u_cm_np1_ba_med_8.avi"],
}


def make_hmdb51(root: Path, video_subdir: str = "videos") -> Path:
    """Tags per class: clip 0 -> train (1), clip 1 -> test (2), clip 2 -> unused (0); CRLF + trailing blanks.
    Videos go to `<root>/<video_subdir>/<class>/` ('' = the root itself)."""
    video_dir = root / video_subdir
    for class_name, clips in HMDB_CLIPS.items():
        for clip in clips:
            put(video_dir / class_name / clip, tiny_video())
        lines = [f"{clips[0]} 1 ", f"{clips[1]}  2", f"{clips[2]} 0"]
        put(root / "testTrainMulti_7030_splits" / f"{class_name}_test_split1.txt", crlf(lines))
    return root


@pytest.mark.parametrize("video_subdir", ["videos", ""])
def test_hmdb51_tags_classes_and_odd_names(tmp_path, video_subdir):
    listing = read_layout("hmdb51", make_hmdb51(tmp_path, video_subdir))
    assert listing.classes == ["cartwheel", "kick_ball", "shoot_ball"]  # '_' inside class names kept
    assert not listing.missing
    by_name = {v.path.name: v for v in listing.videos}
    assert len(by_name) == 6  # the tag-0 clips are not used
    for class_name, clips in HMDB_CLIPS.items():
        assert by_name[clips[0]].official_split == "train" and by_name[clips[0]].class_name == class_name
        assert by_name[clips[1]].official_split == "test" and by_name[clips[1]].class_name == class_name
        assert clips[2] not in by_name
    assert all(v.path.is_file() for v in listing.videos)


def test_hmdb51_missing_split_files_name_the_folder(tmp_path):
    make_hmdb51(tmp_path)
    with pytest.raises(LayoutError, match=r"testTrainMulti_7030_splits.*_test_split2\.txt"):
        read_layout("hmdb51", tmp_path, split_id=2)
    with pytest.raises(LayoutError, match="testTrainMulti_7030_splits"):
        read_layout("hmdb51", tmp_path / "videos")


# --- Kinetics ------------------------------------------------------------------------------------

KINETICS_TRAIN_CSV = """label,youtube_id,time_start,time_end,split,is_cc
"air drumming",--nQbRBEz2s,104,114,train,0
"massaging person's head",-aB3_xY9zQw,5,15,train,1
"shooting goal (soccer)",abcdefghijk,0.0,10.0,train,0
"shooting goal (soccer)",zzzzzzzzzzz,30,40,train,0
abseiling,Q_-12345678,7,17,train,0
"""
KINETICS_VAL_CSV = """label,youtube_id,time_start,time_end,split
air drumming,vvvvvvvvvvv,1,11,validate
abseiling,-wwwwwwwwww,2,12,validate
"""


def make_kinetics(root: Path, flat_val: bool = True, val_name: str = "validate.csv",
                  train_dir: str = "train", val_dir: str = "val") -> Path:
    """train/ in label folders (mmaction2 '_' names), val/ flat (CVDF); one train row not downloaded.
    `train_dir`/`val_dir` name the folders below the root ('' = the root itself)."""
    put(root / "annotations" / "train.csv", KINETICS_TRAIN_CSV)
    put(root / "annotations" / val_name, KINETICS_VAL_CSV)
    train = root / train_dir
    put(train / "air_drumming" / "--nQbRBEz2s_000104_000114.mp4", tiny_video("h264"))
    put(train / "massaging_person's_head" / "-aB3_xY9zQw_000005_000015.mp4", tiny_video("h264"))
    put(train / "shooting_goal_(soccer)" / "abcdefghijk_000000_000010.mp4", tiny_video("h264"))
    put(train / "abseiling" / "Q_-12345678_000007_000017.mp4", tiny_video("h264"))
    put(train / "abseiling" / "._Q_-12345678_000007_000017.mp4", b"AppleDouble junk")
    val = root / val_dir
    put((val if flat_val else val / "abseiling") / "-wwwwwwwwww_000002_000012.mp4", tiny_video("h264"))
    put(val / "vvvvvvvvvvv.mp4", tiny_video("h264"))  # MIM copies drop the times
    return root


@pytest.mark.parametrize("val_name", ["validate.csv", "val.csv"])
def test_kinetics_labels_from_csv_with_quotes_and_flat_folders(tmp_path, val_name):
    listing = read_layout("kinetics", make_kinetics(tmp_path, val_name=val_name))
    assert listing.classes == ["abseiling", "air drumming", "massaging person's head", "shooting goal (soccer)"]
    by_stem = {v.path.stem: v for v in listing.videos}
    assert by_stem["-aB3_xY9zQw_000005_000015"].class_name == "massaging person's head"
    assert by_stem["-wwwwwwwwww_000002_000012"].class_name == "abseiling"  # flat: label from the CSV
    assert by_stem["-wwwwwwwwww_000002_000012"].official_split == "test"  # official val = our test
    assert by_stem["vvvvvvvvvvv"].class_name == "air drumming"
    assert sum(v.official_split == "train" for v in listing.videos) == 4
    assert [(m.rel_path, m.reason) for m in listing.missing] == [("train/zzzzzzzzzzz_000030_000040.mp4",
                                                                  LISTED_BUT_MISSING)]
    assert not any(v.path.name.startswith("._") for v in listing.videos)


def test_kinetics_missing_csv_names_the_candidates(tmp_path):
    make_kinetics(tmp_path)
    (tmp_path / "annotations" / "validate.csv").unlink()
    with pytest.raises(LayoutError, match=r"val\.csv.*validate\.csv"):
        read_layout("kinetics", tmp_path)


def test_kinetics_csv_without_label_column_is_rejected(tmp_path):
    make_kinetics(tmp_path)
    put(tmp_path / "annotations" / "train.csv", "youtube_id,time_start,time_end,split\nabc,0,10,test\n")
    with pytest.raises(LayoutError, match=r"train\.csv: missing column\(s\) \['label'\]"):
        read_layout("kinetics", tmp_path)


# --- Something-Something-v2 ----------------------------------------------------------------------

SSV2_LABELS = {"Pulling something from left to right": "0", "Pulling something from right to left": "1",
               "Putting number of something onto something": "2"}


def make_ssv2(root: Path, prefixed: bool = False, video_subdir: str | None = None) -> Path:
    """Label files in labels/ (Qualcomm names) or the root (20BN `something-something-v2-*` names); videos in
    `video_subdir` (default: the root when prefixed, else 20bn-something-something-v2/)."""
    def name(kind: str) -> Path:
        return root / f"something-something-v2-{kind}.json" if prefixed else root / "labels" / f"{kind}.json"
    put(name("labels"), json.dumps(SSV2_LABELS))
    put(name("train"), json.dumps([
        {"id": "1", "label": "pulling a cup from left to right", "template": "Pulling [something] from left to right",
         "placeholders": ["a cup"]},
        {"id": "2", "label": "putting 3 pens onto a box",
         "template": "Putting [number of] [something] onto [something]",
         "placeholders": ["3", "pens", "a box"]},
        {"id": "3", "label": "gone", "template": "Pulling [something] from right to left", "placeholders": ["x"]}]))
    put(name("validation"), json.dumps([
        {"id": "10", "label": "pulling pen right to left", "template": "Pulling [something] from right to left",
         "placeholders": ["pen"]}]))
    put(name("test"), json.dumps([{"id": "20"}]))
    if video_subdir is None:
        video_subdir = "" if prefixed else "20bn-something-something-v2"
    video_dir = root / video_subdir
    put(video_dir / "1.webm", tiny_video("vp9"))
    put(video_dir / "2.mp4", tiny_video("h264"))
    put(video_dir / "10.webm", tiny_video("vp9"))
    return root


@pytest.mark.parametrize("prefixed", [False, True])
def test_ssv2_templates_without_brackets_are_the_classes(tmp_path, prefixed):
    listing = read_layout("ssv2", make_ssv2(tmp_path, prefixed))
    assert listing.classes == list(SSV2_LABELS)
    assert listing.hflip_changes_label is True and listing.time_reversal_changes_label is True
    by_id = {v.path.stem: v for v in listing.videos}
    assert by_id["2"].class_name == "Putting number of something onto something" and by_id["2"].path.suffix == ".mp4"
    assert by_id["10"].official_split == "test" and by_id["10"].class_name == "Pulling something from right to left"
    assert "20" not in by_id  # test.json has no labels
    assert [m.reason for m in listing.missing] == [LISTED_BUT_MISSING] and "3.webm" in listing.missing[0].rel_path


# --- where the videos are ------------------------------------------------------------------------

def found(listing) -> set[tuple[str, str, str]]:
    """(path below its video folder, class, official split) of every video found."""
    dirs = listing.video_dirs
    return {(v.path.relative_to(dirs[v.official_split]).as_posix(), v.class_name, v.official_split)
            for v in listing.videos}


VARIANTS = {  # layout -> (tree builder, [(variant, folder the videos must be found in)])
    "ucf101": (lambda root, sub: make_ucf101(root, groups=2, clips=1, video_subdir=sub),
               [("UCF-101", "UCF-101"), ("UCF101", "UCF101"), ("videos", "videos"), ("ucf_videos", "ucf_videos")]),
    "hmdb51": (make_hmdb51, [("videos", "videos"), ("hmdb51_org", "hmdb51_org"), ("", ""),
                             ("extracted", "extracted")]),
    "ssv2": (lambda root, sub: make_ssv2(root, video_subdir=sub),
             [("20bn-something-something-v2", "20bn-something-something-v2"), ("", ""), ("videos", "videos")]),
}


@pytest.mark.parametrize("layout", list(VARIANTS))
def test_the_same_videos_are_found_in_every_on_disk_variant(tmp_path, layout):
    build, variants = VARIANTS[layout]
    seen = {}
    for variant, expected_dir in variants:
        root = build(tmp_path / (variant or "root"), variant)
        listing = read_layout(layout, root)
        assert set(listing.video_dirs.values()) == {root.resolve() / expected_dir}, variant
        assert not listing.missing or layout == "ssv2", variant  # the ssv2 tree lists one id it lacks
        seen[variant] = found(listing)
    first = next(iter(seen.values()))
    assert first and all(videos == first for videos in seen.values())


@pytest.mark.parametrize("train_dir, val_dir", [("train", "val"), ("videos_train", "videos_val"),
                                                ("videos/train", "videos/val"), ("all_clips", "all_clips"), ("", "")])
def test_kinetics_videos_found_in_split_folders_or_one_flat_folder(tmp_path, train_dir, val_dir):
    root = make_kinetics(tmp_path / "k", train_dir=train_dir, val_dir=val_dir)
    listing = read_layout("kinetics", root)
    reference = read_layout("kinetics", make_kinetics(tmp_path / "ref"))
    named = {"train": root / train_dir, "test": root / val_dir}
    expected = {split: path if path.name in ("train", "val", "videos_train", "videos_val") else root
                for split, path in named.items()}  # a folder of another name is found as "below the root"
    assert listing.video_dirs == expected
    assert {(v.path.name, v.class_name, v.official_split) for v in listing.videos} == \
           {(v.path.name, v.class_name, v.official_split) for v in reference.videos}
    assert [m.path.name for m in listing.missing] == ["zzzzzzzzzzz_000030_000040.mp4"]


def test_videos_dir_overrides_the_search_and_may_lie_outside_the_root(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb", "videos")
    elsewhere = tmp_path / "disk2" / "hmdb_clips"
    (root / "videos").rename(elsewhere.parent.mkdir(parents=True) or elsewhere)
    listing = read_layout("hmdb51", root, videos_dir=elsewhere)
    assert listing.video_dirs == {"train": elsewhere, "test": elsewhere} and not listing.missing
    assert found(listing) == found(read_layout("hmdb51", make_hmdb51(tmp_path / "ref")))
    assert all(not v.rel_path.startswith("/") for v in listing.videos)  # relative to the videos folder
    with pytest.raises(LayoutError, match="--videos-dir .*nowhere is not a folder"):
        read_layout("hmdb51", root, videos_dir=tmp_path / "nowhere")


# --- folder and filelist -------------------------------------------------------------------------

def test_folder_layout_sorted_classes_all_train(tmp_path):
    for class_name in ("walk", "Run", "jump"):
        for i in range(2):
            put(tmp_path / class_name / f"clip {i}.mp4", tiny_video("h264"))
    put(tmp_path / "walk" / "notes.txt", "not a video")
    listing = read_layout("folder", tmp_path)
    assert listing.classes == ["Run", "jump", "walk"]
    assert len(listing.videos) == 6 and {v.official_split for v in listing.videos} == {"train"}
    assert {v.class_name for v in listing.videos if v.rel_path.startswith("jump/")} == {"jump"}


def test_filelist_spaces_crlf_zero_based_and_class_names(tmp_path):
    put(tmp_path / "my videos" / "a clip.mp4", tiny_video("h264"))
    put(tmp_path / "b.mp4", tiny_video("h264"))
    put(tmp_path / "c.mp4", tiny_video("h264"))
    train = put(tmp_path / "train.txt", crlf(["my videos/a clip.mp4 1", "b.mp4 0", "nothere.mp4 1", "c.mp4"]))
    test = put(tmp_path / "test.txt", crlf(["b.mp4 2"], final_newline=False))
    listing = read_layout("filelist", tmp_path, train_list=train, test_list=test)
    assert listing.classes == ["class_0", "class_1", "class_2"]
    got = {(v.rel_path, v.class_name, v.official_split) for v in listing.videos}
    assert got == {("my videos/a clip.mp4", "class_1", "train"), ("b.mp4", "class_0", "train"),
                   ("c.mp4", None, "train"), ("b.mp4", "class_2", "test")}
    assert [(m.rel_path, m.reason) for m in listing.missing] == [("nothere.mp4", LISTED_BUT_MISSING)]
    names = put(tmp_path / "classes.txt", crlf(["walk", "run", "jump"]))
    listing = read_layout("filelist", tmp_path, train_list=train, test_list=test, classes_file=names)
    assert listing.classes == ["walk", "run", "jump"]
    assert {v.class_name for v in listing.videos if v.rel_path == "my videos/a clip.mp4"} == {"run"}
    with pytest.raises(LayoutError, match="out of range"):
        read_layout("filelist", tmp_path, train_list=train, test_list=test,
                    classes_file=put(tmp_path / "two.txt", "walk\nrun\n"))
    with pytest.raises(LayoutError, match="missing.txt"):
        read_layout("filelist", tmp_path, train_list=tmp_path / "missing.txt")


# --- layout names and detection ------------------------------------------------------------------

def test_unknown_layout_lists_allowed_values(tmp_path):
    with pytest.raises(LayoutError) as error:
        read_layout("ucf-101", tmp_path)
    assert "ucf-101" in str(error.value) and all(name in str(error.value) for name in LAYOUTS)


def test_detect_layout(tmp_path):
    assert detect_layout(make_ucf101(tmp_path / "u", groups=1, clips=1)) == (
        "ucf101", f"found {tmp_path / 'u' / 'ucfTrainTestlist'}")
    assert detect_layout(make_hmdb51(tmp_path / "h"))[0] == "hmdb51"
    assert detect_layout(make_kinetics(tmp_path / "k"))[0] == "kinetics"
    assert detect_layout(make_ssv2(tmp_path / "s"))[0] == "ssv2"
    assert detect_layout(make_ssv2(tmp_path / "s2", prefixed=True)) == (
        "ssv2", f"found {tmp_path / 's2' / 'something-something-v2-labels.json'}")
    put(tmp_path / "f" / "walk" / "a.mp4", tiny_video("h264"))
    layout, why = detect_layout(tmp_path / "f")
    assert layout == "folder" and "1 folders" in why and "walk/" in why
    assert read_layout("auto", tmp_path / "h").layout == "hmdb51"
