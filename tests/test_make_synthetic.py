"""The synthetic datasets: official layouts with their real quirks, decodable videos, determinism, and
clips whose motion is the primitive their class claims."""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from tools.make_synthetic import (DATASETS, KINETICS_CLASSES, PLANNERS, SIZES, UCF_CLASSES, main,
                                  make_synthetic, render_job)
from tools.synthetic_actions import PRIMITIVES, STYLES, make_trajectory, render_clip

REPO = Path(__file__).resolve().parents[1]
TINY_FRAMES = SIZES["tiny"].max_frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    info = make_synthetic(out, "tiny", seed=0, workers=2, progress=False)
    return out, info


def _annotation_bytes(out: Path) -> dict[str, bytes]:
    folders = ("ucfTrainTestlist", "testTrainMulti_7030_splits", "annotations", "labels")
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parent.name in folders}


def _videos(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in (".avi", ".mp4", ".webm")}


# ---------------------------------------------------------------- UCF-101

def test_ucf_split_files_are_crlf_one_based_in_case_insensitive_order(tiny):
    out, _ = tiny
    lists = out / "ucf101/ucfTrainTestlist"
    class_ind = (lists / "classInd.txt").read_bytes()
    assert class_ind.endswith(b"\r\n") and b"\n" not in class_ind.replace(b"\r\n", b"")
    entries = [line.split(" ") for line in class_ind.decode().split("\r\n") if line]
    names = [name for _, name in entries]
    assert [int(i) for i, _ in entries] == list(range(1, len(UCF_CLASSES) + 1))
    assert names == sorted(UCF_CLASSES, key=str.lower)
    assert names != sorted(names), "the set must exercise the classInd-vs-ASCII ordering quirk"
    assert set(names) == {p.name for p in (out / "ucf101/UCF-101").iterdir()}

    on_disk = {str(p.relative_to(out / "ucf101/UCF-101")) for p in (out / "ucf101/UCF-101").rglob("*.avi")}
    for split, test_groups in ((1, range(1, 8)), (2, range(8, 15)), (3, range(15, 22))):
        train_raw = (lists / f"trainlist{split:02d}.txt").read_bytes()
        test_raw = (lists / f"testlist{split:02d}.txt").read_bytes()
        assert train_raw.endswith(b"\r\n") and not test_raw.endswith(b"\n")
        assert b"\n" not in train_raw.replace(b"\r\n", b"") + test_raw.replace(b"\r\n", b"")
        train = [line.split(" ") for line in train_raw.decode().split("\r\n") if line]
        test = test_raw.decode().split("\r\n")
        assert all(len(fields) == 2 for fields in train) and all(" " not in rel for rel in test)
        for rel, label in train:
            assert names[int(label) - 1] == rel.split("/")[0]  # 1-based classInd index of the folder
        train_paths = {rel for rel, _ in train}
        assert train_paths.isdisjoint(test) and train_paths | set(test) == on_disk
        group = re.compile(r"_g(\d\d)_c\d\d\.avi$")
        assert all(int(group.search(rel).group(1)) in test_groups for rel in test)
        assert all(int(group.search(rel).group(1)) not in test_groups for rel in train_paths)


def test_ucf_handstand_pushups_quirk(tiny):
    out, _ = tiny
    files = sorted(p.name for p in (out / "ucf101/UCF-101/HandstandPushups").iterdir())
    assert files and all(name.startswith("v_HandStandPushups_g") for name in files)
    for other in (out / "ucf101/UCF-101").iterdir():  # every other class names its files after its folder
        if other.name != "HandstandPushups":
            assert all(p.name.startswith(f"v_{other.name}_g") for p in other.iterdir())
    test_list = (out / "ucf101/ucfTrainTestlist/testlist01.txt").read_bytes().decode()
    assert "HandstandPushups/v_HandStandPushups_g01_c01.avi" in test_list.split("\r\n")


# ---------------------------------------------------------------- HMDB-51

HMDB_NAME = r"^(.*)_{cls}_([a-z])_(cm|nm)_(np\d+)_(fr|ba|le|ri)_(bad|med|goo)_(\d+)\.avi$"


def test_hmdb_split_files_tag_every_clip(tiny):
    out, info = tiny
    classes = sorted(info["datasets"]["hmdb51"]["classes"])
    split_dir = out / "hmdb51/testTrainMulti_7030_splits"
    assert sorted(p.name for p in split_dir.iterdir()) == sorted(
        f"{c}_test_split{k}.txt" for c in classes for k in (1, 2, 3))
    assert "fall_floor" in classes  # class names with '_': parse with rsplit, not split
    for cls in classes:
        clips = {p.name for p in (out / "hmdb51/videos" / cls).iterdir()}
        assert all(re.match(HMDB_NAME.format(cls=cls), name) and " " not in name for name in clips)
        for k in (1, 2, 3):
            rows = [line.split() for line in (split_dir / f"{cls}_test_split{k}.txt").read_text().splitlines()]
            assert {name for name, _ in rows} == clips  # basenames only, every clip listed
            tags = Counter(tag for _, tag in rows)
            assert set(tags) == {"0", "1", "2"} and tags["1"] > tags["2"]
    titles = "".join(p.name for p in (out / "hmdb51/videos").rglob("*.avi"))
    assert set("()!&;@[]#+-") <= set(titles)


# ---------------------------------------------------------------- Kinetics

def test_kinetics_csv_quoting_ids_and_missing_videos(tiny):
    out, _ = tiny
    files = _videos(out / "kinetics400")
    listed = set()
    for split in ("train", "val"):
        raw = (out / f"kinetics400/annotations/{split}.csv").read_text()
        lines = raw.splitlines()
        assert lines[0] == "label,youtube_id,time_start,time_end,split,is_cc"
        for line in lines[1:]:
            label = next(csv.reader([line]))[0]
            assert line.startswith(f'"{label}",' if " " in label else f"{label},")  # crawler quoting
        rows = list(csv.DictReader(io.StringIO(raw)))
        assert {r["label"] for r in rows} == set(KINETICS_CLASSES) and {r["split"] for r in rows} == {split}
        assert any(r["youtube_id"].startswith("-") for r in rows)
        missing = 0
        for r in rows:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", r["youtube_id"]) and r["is_cc"] in ("0", "1")
            start, end = int(r["time_start"]), int(r["time_end"])
            rel = f"{split}/{r['label']}/{r['youtube_id']}_{start:06d}_{end:06d}.mp4"
            assert end - start == 10
            listed.add(rel)
            missing += rel not in files
        assert 1 <= missing <= max(1, 0.05 * len(rows))
    assert files <= listed  # no video without a CSV row
    labels = "".join(KINETICS_CLASSES)
    assert {" ", "'", "(", ")"} <= set(labels)


# ---------------------------------------------------------------- Something-Something-v2

def test_ssv2_label_files(tiny):
    out, _ = tiny
    labels_dir = out / "ssv2/labels"
    labels = json.loads((labels_dir / "labels.json").read_text())
    assert list(labels) == sorted(labels) and list(labels.values()) == [str(i) for i in range(len(labels))]
    assert "Pushing something from left to right" in labels and "Pushing something from right to left" in labels
    videos = {p.stem for p in (out / "ssv2/20bn-something-something-v2").iterdir()}
    seen = []
    for split in ("train", "validation"):
        entries = json.loads((labels_dir / f"{split}.json").read_text())
        classes = set()
        for entry in entries:
            assert set(entry) == {"id", "label", "template", "placeholders"} and entry["id"].isdigit()
            assert "[something]" in entry["template"] and entry["placeholders"][0] in entry["label"]
            classes.add(int(labels[entry["template"].replace("[", "").replace("]", "")]))
        assert classes == set(range(len(labels)))
        seen += [e["id"] for e in entries]
    test = json.loads((labels_dir / "test.json").read_text())
    assert test and all(list(entry) == ["id"] for entry in test)
    seen += [e["id"] for e in test]
    assert len(seen) == len(set(seen)) and set(seen) == videos


# ---------------------------------------------------------------- videos

EXPECTED_STREAMS = {  # dataset -> (container, codec, allowed sizes or None for height-240-any-width, fps)
    "ucf101": ("avi", "mpeg4", {(320, 240)}, {25}),
    "hmdb51": ("avi", "mpeg4", None, {30}),
    "kinetics400": ("mp4", "h264", {(320, 240), (340, 256), (426, 240), (256, 340)}, {24, 25, 30}),
    "ssv2": ("webm", "vp9", None, {12}),
}


def test_every_video_has_the_official_codec_size_and_rate(tiny):
    out, info = tiny
    for dataset, (container, codec, sizes, rates) in EXPECTED_STREAMS.items():
        paths = sorted((out / dataset).rglob(f"*.{container}"))
        assert len(paths) == info["datasets"][dataset]["counts"]["videos"]
        seen_sizes, seen_rates = set(), set()
        for path in paths:
            with av.open(str(path)) as video:
                stream = video.streams.video[0]
                assert stream.codec_context.name == codec, path
                size = (stream.width, stream.height)
                assert size in sizes if sizes else stream.height == 240, (path, size)
                seen_sizes.add(size)
                seen_rates.add(float(stream.guessed_rate))
        assert seen_rates <= rates
        if dataset == "kinetics400":
            assert len(seen_sizes) >= 3 and len(seen_rates) >= 2  # varied, like real YouTube clips
        with av.open(str(paths[0])) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(frames) == TINY_FRAMES and frames[0].std() > 1  # real content, not a blank clip


def test_kinetics_videos_have_b_frames(tiny):
    out, _ = tiny
    path = next((out / "kinetics400/train").rglob("*.mp4"))
    with av.open(str(path)) as video:
        pts = [p.pts for p in video.demux(video=0) if p.pts is not None]
    assert pts != sorted(pts), "decode order should differ from display order, as in real H.264 uploads"


def test_info_records_the_benchmark_shape(tiny):
    out, info = tiny
    on_disk = json.loads((out / "synthetic_info.json").read_text())
    assert on_disk["datasets"] == info["datasets"] and on_disk["seed"] == 0 and on_disk["complete"]
    broad = info["datasets"]["kinetics400"]
    broad_primitives = {p for prims in broad["classes"].values() for p in prims}
    assert len(broad_primitives) == 12 and broad_primitives < set(PRIMITIVES)
    narrow_only = {p for n in ("ucf101", "hmdb51", "ssv2") for prims in info["datasets"][n]["classes"].values()
                   for p in prims} - broad_primitives
    assert narrow_only == set(PRIMITIVES) - broad_primitives  # most narrow classes are in the broad set, some not
    assert sorted({c["style"] for c in broad["clips"].values()}) == sorted(STYLES)
    for name in ("ucf101", "hmdb51", "ssv2"):
        narrow = info["datasets"][name]
        assert len(narrow["classes"]) == 6 and len(narrow["styles"]) == 1
        assert {c["style"] for c in narrow["clips"].values()} == set(narrow["styles"])
    assert len({tuple(info["datasets"][n]["styles"]) for n in ("ucf101", "hmdb51", "ssv2")}) == 3
    assert info["datasets"]["ssv2"]["hflip_changes_label"] and info["datasets"]["kinetics400"]["hflip_changes_label"]
    assert not info["datasets"]["ucf101"]["hflip_changes_label"]
    assert not info["datasets"]["hmdb51"]["hflip_changes_label"]
    assert {p for d in DATASETS for p in info["datasets"][d]["clips"]} == _videos(out)


@pytest.mark.parametrize("size", ["demo", "large"])
def test_broad_set_is_the_largest_and_every_test_part_has_50_clips_per_class(size):
    plans = {name: planner(SIZES[size], 0) for name, planner in PLANNERS.items()}
    videos = {name: len(plan.videos) for name, plan in plans.items()}
    assert videos["kinetics400"] >= 1.8 * max(videos["hmdb51"], videos["ucf101"], videos["ssv2"])
    preset = SIZES[size]
    assert min(preset.kinetics_val_per_class, preset.ucf_test_per_class, preset.hmdb_test_per_class,
               preset.ssv2_val_per_class) >= 50
    assert plans["ucf101"].info["counts"]["split1"]["test"] == 6 * preset.ucf_test_per_class
    assert plans["hmdb51"].info["counts"]["split1"]["test"] == 6 * preset.hmdb_test_per_class


# ---------------------------------------------------------------- reruns and determinism

def test_rerun_skips_finished_videos_and_rewrites_identical_lists(tiny):
    out, _ = tiny
    before = _annotation_bytes(out)
    victim = out / "ucf101/UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi"
    with av.open(str(victim)) as video:
        frames_before = np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
    victim.unlink()
    stale = victim.with_name(f".{victim.name}.partial")
    stale.write_bytes(b"half a video")  # what a killed run leaves behind

    info = make_synthetic(out, "tiny", seed=0, workers=1, progress=False)
    assert info["seconds"] < 5, "only the one deleted video should have been rendered"
    assert not stale.exists() and victim.exists()
    assert _annotation_bytes(out) == before
    with av.open(str(victim)) as video:
        frames_after = np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
    np.testing.assert_array_equal(frames_after, frames_before)


def test_plans_depend_only_on_the_seed():
    for name, planner in PLANNERS.items():
        first, again, other = planner(SIZES["tiny"], 0), planner(SIZES["tiny"], 0), planner(SIZES["tiny"], 1)
        assert first.annotations == again.annotations and first.videos == again.videos, name
        assert first.annotations != other.annotations or first.videos != other.videos, name
    job = PLANNERS["kinetics400"](SIZES["tiny"], 0).videos[3]
    np.testing.assert_array_equal(render_job(job), render_job(job))


def test_refuses_to_mix_seeds_in_one_folder(tiny):
    out, _ = tiny
    with pytest.raises(SystemExit, match="--seed 0"):
        make_synthetic(out, "tiny", seed=1, workers=1, progress=False)


def test_cli_runs_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tools/make_synthetic.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "--workers" in result.stdout and "--size" in result.stdout
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--size", "huge"])


# ---------------------------------------------------------------- the clips themselves

def _object_masks(frames: np.ndarray, style: str) -> np.ndarray:
    """Boolean [T, H, W]: where the moving object is, for styles whose background is easy to tell."""
    if style == "noisy_box":
        return frames.max(axis=-1) > 150  # bright object, dark background
    background = frames[0, 0, 0].astype(int)  # flat_arrow: flat background ...
    differs = np.abs(frames.astype(int) - background).max(axis=-1) > 15
    return differs & ~differs.all(axis=0)  # ... and a static distractor


def _centroids(masks: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:masks.shape[1], 0:masks.shape[2]]
    return np.array([(xs[m].mean(), ys[m].mean()) for m in masks])


@pytest.mark.parametrize("style", ["noisy_box", "flat_arrow"])
def test_direction_primitives_move_the_object_that_way(style):
    for seed in range(3):
        for primitive, axis, sign in (("move_left", 0, -1), ("move_right", 0, 1), ("move_up", 1, -1), ("move_down", 1, 1)):
            frames = render_clip(primitive, style, 16, 320, 240, np.random.default_rng(seed))
            centres = _centroids(_object_masks(frames, style))
            shift = centres[-1] - centres[0]
            assert sign * shift[axis] > 0.25 * 320 * 0.35 * 0.5, (primitive, seed, shift)
            assert abs(shift[1 - axis]) < 10, (primitive, seed, shift)


def test_grow_shrink_and_blink_change_what_is_visible():
    for seed in range(3):
        grow = _object_masks(render_clip("grow", "flat_arrow", 16, 320, 240, np.random.default_rng(seed)), "flat_arrow")
        shrink = _object_masks(render_clip("shrink", "flat_arrow", 16, 320, 240, np.random.default_rng(seed)), "flat_arrow")
        assert grow[-1].sum() > 2 * grow[0].sum() and shrink[0].sum() > 2 * shrink[-1].sum()
        blink = _object_masks(render_clip("blink", "noisy_box", 24, 320, 240, np.random.default_rng(seed)), "noisy_box")
        shown = blink.reshape(len(blink), -1).any(axis=1)
        assert shown.any() and not shown.all()


def test_rotation_sense_is_clockwise_on_screen():
    # image y points down, so an increasing angle turns the +x axis toward +y: clockwise as seen
    cw = make_trajectory("rotate_cw", 16, 320, 240, np.random.default_rng(0))
    ccw = make_trajectory("rotate_ccw", 16, 320, 240, np.random.default_rng(0))
    assert np.all(np.diff(cw.angle) > 0) and np.all(np.diff(ccw.angle) < 0)
    assert np.ptp(cw.cx) == 0 and np.ptp(cw.cy) == 0


@pytest.mark.parametrize("style", STYLES)
def test_every_primitive_renders_in_every_style(style):
    for k, primitive in enumerate(PRIMITIVES):
        for width, height in ((320, 240), (256, 340)):
            frames = render_clip(primitive, style, 8, width, height, np.random.default_rng(k))
            assert frames.shape == (8, height, width, 3) and frames.dtype == np.uint8
            np.testing.assert_array_equal(frames, render_clip(primitive, style, 8, width, height, np.random.default_rng(k)))
            assert np.abs(frames[1:].astype(int) - frames[:-1]).mean() > 0  # something changes


def test_render_clip_names_the_allowed_values():
    with pytest.raises(ValueError, match="move_left"):
        render_clip("moonwalk", "noisy_box", 8, 64, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="dot_cloud"):
        render_clip("grow", "sepia", 8, 64, 64, np.random.default_rng(0))


@pytest.mark.parametrize("width, height", [(320, 240), (426, 240), (256, 340)])
def test_every_action_stays_in_the_centred_square(width, height):
    """A centre crop keeps the square of side min(W, H): every pose of every primitive fits inside it."""
    short = min(width, height)
    x0, y0 = (width - short) / 2, (height - short) / 2
    for seed in range(20):
        for primitive in PRIMITIVES:
            t = make_trajectory(primitive, 32, width, height, np.random.default_rng(seed))
            reach = t.radius * t.scale
            assert np.all(t.cx - reach >= x0 - 1e-6) and np.all(t.cx + reach <= x0 + short + 1e-6), (primitive, seed)
            assert np.all(t.cy - reach >= y0 - 1e-6) and np.all(t.cy + reach <= y0 + short + 1e-6), (primitive, seed)
