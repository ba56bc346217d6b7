"""Write four small synthetic action datasets in the official on-disk layouts of the real ones.

    python tools/make_synthetic.py --out data/synthetic --size demo --seed 0 --workers 2

gives `<out>/{ucf101,hmdb51,kinetics400,ssv2}/` laid out like a real download (see
../shared/reference/dataset-layouts.md, quirks included: the UCF `HandStandPushups` file names, CRLF
split lists, HMDB titles full of `( ) ! & ; @ [ ] # + -`, quoted Kinetics labels and CSV rows whose
video was never downloaded, SSv2 templates with `[something]`), plus `<out>/synthetic_info.json`
recording each class's motion primitive, the styles, the counts, the seed and every clip's primitive.

The content is the benchmark of METHOD.md section 1b: a broad Kinetics-like set (12 of the 14
primitives, every clip in a random one of the 4 styles, the largest set) next to three narrow sets (one
style and 6 classes each; most of their classes share a primitive with the broad set, the UCF-like
`HandstandPushups` and the HMDB-like `somersault` do not). Test parts hold 50 clips per class. Labels, file lists and frames depend only on --seed; a rerun skips finished videos,
and an interrupted one leaves no half-written file behind.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import string
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as `python tools/make_synthetic.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.video_encode import EncodeSettings, encode_video  # noqa: E402
from tools.synthetic_actions import PRIMITIVES, STYLES, render_clip  # noqa: E402

CLIP_SECONDS = 2.0
INFO_FILE = "synthetic_info.json"
PARTIAL_SUFFIX = ".partial"  # temp videos are `.<name>.partial`, renamed once complete

# class -> primitives it is drawn from (two entries: each clip picks one, e.g. either rotation sense)
UCF_CLASSES = {
    # Hammering/HammerThrow and JumpingJack/JumpRope sort differently case-insensitively (classInd
    # order) and in ASCII (sorted folder names), like the real pairs at classInd 35/36 and 47/48.
    "BlowingCandles": ("blink",),
    "Hammering": ("shake",),
    "HammerThrow": ("rotate_cw", "rotate_ccw"),
    "HandstandPushups": ("pulse",),  # a primitive the broad set does not have
    "JumpingJack": ("grow",),
    "JumpRope": ("shrink",),
}
HMDB_CLASSES = {
    "climb": ("move_up",),
    "fall_floor": ("move_down",),
    "jump": ("bounce",),
    "somersault": ("zigzag",),  # a primitive the broad set does not have
    "turn": ("rotate_cw", "rotate_ccw"),
    "wave": ("shake",),
}
KINETICS_CLASSES = {
    "sliding object (left)": ("move_left",),
    "sliding object (right)": ("move_right",),
    "raising American flag": ("move_up",),
    "skydiving": ("move_down",),
    "turning steering wheel (clockwise)": ("rotate_cw",),
    "turning steering wheel (counterclockwise)": ("rotate_ccw",),
    "balloon blowing": ("grow",),
    "deflating person's balloon": ("shrink",),
    "shaking head": ("shake",),
    "tossing person's ball": ("bounce",),
    "hurling (sport)": ("orbit",),
    "blinking": ("blink",),
}
SSV2_TEMPLATES = {
    "Pushing [something] from left to right": ("move_right",),
    "Pushing [something] from right to left": ("move_left",),
    "Lifting [something] up": ("move_up",),
    "Putting [something] down": ("move_down",),
    "Turning [something] clockwise": ("rotate_cw",),
    "Turning [something] counterclockwise": ("rotate_ccw",),
}
SSV2_OBJECTS = ("pen", "potato", "remote control", "vicks vaporub bottle", "cup", "phone", "book",
                "spoon", "toy car", "matchbox", "bottle cap", "stapler")
# the HMDB grammar: <title>_<class>_<body>_<cam>_<np>_<view>_<quality>_<n>.avi
HMDB_TITLE_WORDS = ("Pick", "Up", "Your", "Trash", "Golf", "Swing", "Goal", "Rhythm", "Smile", "Jay",
                    "Leno", "David", "Letterman", "Best", "of", "Part", "HD", "Climbing", "Tips",
                    "Rad", "Schlag", "die", "Bank", "M_nchen", "2008", "07", "Fun", "Kids")
HMDB_TITLE_FORMS = ("({0}){1}_{2}", "{0}_{1}!", "{0}_1_&_2_{1}", "{0};{1}", "{0}_@_{1}_{2}",
                    "[{0}]_{1}", "#{0}_{1}", "{0}_300+_{1}!!!", "{0}_-_{1}", "{0}_-]", "{0}{1}_{2}")
FLIP_PARTNER = {"move_left": "move_right", "move_right": "move_left",
                "rotate_cw": "rotate_ccw", "rotate_ccw": "rotate_cw"}
REVERSE_PARTNER = {**FLIP_PARTNER, "move_up": "move_down", "move_down": "move_up",
                   "grow": "shrink", "shrink": "grow"}
DATASETS = ("ucf101", "hmdb51", "kinetics400", "ssv2")  # the index is part of every clip's seed


@dataclass(frozen=True)
class SizePreset:
    """How many clips each dataset gets per class and official split. UCF train clips are spread over
    its groups 8-25 and test clips over groups 1-7 (split 1's test groups); HMDB lists every clip in all
    3 splits (tags 1 = train, 2 = test, 0 = unused, drawn per split); Kinetics writes ~2% CSV rows without
    a video. Test parts hold at least 50 clips per class in `demo` and `large` (METHOD.md 1b: a table
    must be able to say something; one clip is 0.3 points of a 6-class test split)."""

    kinetics_train_per_class: int
    kinetics_val_per_class: int  # Kinetics' `val` is the test part
    ucf_train_per_class: int
    ucf_test_per_class: int
    ucf_groups: tuple[int, ...]
    hmdb_train_per_class: int
    hmdb_test_per_class: int
    hmdb_unused_per_class: int
    ssv2_train_per_class: int
    ssv2_val_per_class: int  # SSv2's `validation` is the test part
    ssv2_test_per_class: int  # SSv2's `test` has no labels
    max_frames: int | None = None  # cap on 2 s x fps (tiny clips are shorter)


SIZES = {
    # tiny: one clip per UCF group, groups chosen so each split has test clips (g01-07, g08-14, g15-21)
    "tiny": SizePreset(kinetics_train_per_class=4, kinetics_val_per_class=3,
                       ucf_train_per_class=4, ucf_test_per_class=3, ucf_groups=(1, 3, 6, 9, 14, 18, 23),
                       hmdb_train_per_class=6, hmdb_test_per_class=3, hmdb_unused_per_class=2,
                       ssv2_train_per_class=4, ssv2_val_per_class=3, ssv2_test_per_class=1, max_frames=16),
    # demo: ~3.6k videos; 50 test clips per class everywhere
    "demo": SizePreset(kinetics_train_per_class=70, kinetics_val_per_class=50,
                       ucf_train_per_class=70, ucf_test_per_class=50, ucf_groups=tuple(range(1, 26)),
                       hmdb_train_per_class=70, hmdb_test_per_class=50, hmdb_unused_per_class=6,
                       ssv2_train_per_class=70, ssv2_val_per_class=50, ssv2_test_per_class=3),
    "large": SizePreset(kinetics_train_per_class=280, kinetics_val_per_class=100,
                        ucf_train_per_class=200, ucf_test_per_class=100, ucf_groups=tuple(range(1, 26)),
                        hmdb_train_per_class=200, hmdb_test_per_class=100, hmdb_unused_per_class=20,
                        ssv2_train_per_class=200, ssv2_val_per_class=100, ssv2_test_per_class=20),
}


@dataclass(frozen=True)
class VideoJob:
    """One video to render: where it goes (relative to --out), what it shows, how it is encoded."""

    path: str
    primitive: str
    style: str
    width: int
    height: int
    num_frames: int
    encode: EncodeSettings
    seed: tuple[int, ...]


@dataclass
class DatasetPlan:
    name: str
    videos: list[VideoJob]
    annotations: dict[str, bytes]  # path relative to --out -> file content
    info: dict


def _frames(fps: float, preset: SizePreset) -> int:
    frames = int(round(CLIP_SECONDS * fps))
    return min(frames, preset.max_frames) if preset.max_frames else frames


def _job(path: str, primitive: str, style: str, size: tuple[int, int], encode: EncodeSettings,
         preset: SizePreset, seed: tuple[int, ...]) -> VideoJob:
    return VideoJob(path, primitive, style, size[0], size[1], _frames(encode.fps, preset), encode, seed)


# How the raw videos are encoded: keyframe every second. Kinetics gets B-frames (decode order differs
# from display order, as in real YouTube H.264) and x264's fastest preset, which halves the demo's
# run time; the other codecs are cheap already.
UCF_ENCODE = EncodeSettings(codec="mpeg4", fps=25.0, gop=25)
HMDB_ENCODE = EncodeSettings(codec="mpeg4", fps=30.0, gop=30)
SSV2_ENCODE = EncodeSettings(codec="vp9", fps=12.0, gop=12)
KINETICS_ENCODES = tuple(EncodeSettings(codec="h264", fps=fps, gop=int(fps), bframes=2, preset="ultrafast", crf=28)
                         for fps in (24.0, 25.0, 30.0))


def _changes_label(classes: dict[str, tuple[str, ...]], partner: dict[str, str]) -> bool:
    """True when mapping every primitive to its partner moves some clip into another class."""
    return any({partner.get(p, p) for p in prims} != set(prims) for prims in classes.values())


def _dataset_info(layout: str, styles: list[str], classes: dict[str, tuple[str, ...]], codec: str,
                  videos: list[VideoJob], counts: dict) -> dict:
    return {
        "layout": layout, "styles": styles, "codec": codec,
        "classes": {name: list(prims) for name, prims in classes.items()},
        "hflip_changes_label": _changes_label(classes, FLIP_PARTNER),
        "time_reversal_changes_label": _changes_label(classes, REVERSE_PARTNER),
        "counts": {"videos": len(videos), **counts},
        "frame_sizes": sorted({f"{v.width}x{v.height}" for v in videos}),
        "fps": sorted({v.encode.fps for v in videos}),
        "clips": {v.path: {"primitive": v.primitive, "style": v.style} for v in videos},
    }


def _crlf_lines(lines: list[str], final_newline: bool) -> bytes:
    text = "\r\n".join(lines) + ("\r\n" if final_newline else "")
    return text.encode()


def plan_ucf101(preset: SizePreset, seed: int) -> DatasetPlan:
    rng = np.random.default_rng([seed, DATASETS.index("ucf101")])
    style, root = "noisy_box", "ucf101"
    class_order = sorted(UCF_CLASSES, key=str.lower)  # classInd order is case-insensitive
    videos, files_by_class = [], {}
    for name in class_order:
        per_group = []
        for groups, clips in (([g for g in preset.ucf_groups if g <= 7], preset.ucf_test_per_class),
                              ([g for g in preset.ucf_groups if g > 7], preset.ucf_train_per_class)):
            per_group += list(zip(groups, 1 + rng.multinomial(clips - len(groups), [1 / len(groups)] * len(groups))))
        token = "HandStandPushups" if name == "HandstandPushups" else name  # the real file-name quirk
        files_by_class[name] = []
        for group, count in per_group:
            for clip in range(1, count + 1):
                rel = f"{name}/v_{token}_g{group:02d}_c{clip:02d}.avi"
                files_by_class[name].append((group, rel))
                primitive = str(rng.choice(UCF_CLASSES[name]))
                videos.append(_job(f"{root}/UCF-101/{rel}", primitive, style, (320, 240), UCF_ENCODE,
                                   preset, (seed, DATASETS.index("ucf101"), len(videos))))
    annotations = {f"{root}/ucfTrainTestlist/classInd.txt":
                   _crlf_lines([f"{i} {name}" for i, name in enumerate(class_order, 1)], final_newline=True)}
    counts = {}
    for split, test_groups in ((1, range(1, 8)), (2, range(8, 15)), (3, range(15, 22))):
        train = [f"{rel} {class_order.index(name) + 1}" for name in class_order
                 for group, rel in files_by_class[name] if group not in test_groups]
        test = [rel for name in class_order for group, rel in files_by_class[name] if group in test_groups]
        annotations[f"{root}/ucfTrainTestlist/trainlist{split:02d}.txt"] = _crlf_lines(train, final_newline=True)
        annotations[f"{root}/ucfTrainTestlist/testlist{split:02d}.txt"] = _crlf_lines(test, final_newline=False)
        counts[f"split{split}"] = {"train": len(train), "test": len(test)}
    info = _dataset_info("ucf101", [style], {c: UCF_CLASSES[c] for c in class_order}, "mpeg4", videos, counts)
    return DatasetPlan("ucf101", videos, annotations, info)


def _hmdb_title(rng: np.random.Generator, index: int) -> str:
    # the first titles use every form once, so even a tiny set carries all the odd characters
    form = HMDB_TITLE_FORMS[index] if index < len(HMDB_TITLE_FORMS) else str(rng.choice(HMDB_TITLE_FORMS))
    words = [str(w) for w in rng.choice(HMDB_TITLE_WORDS, size=3)]
    return form.format(*words)


def plan_hmdb51(preset: SizePreset, seed: int) -> DatasetPlan:
    rng = np.random.default_rng([seed, DATASETS.index("hmdb51")])
    style, root = "gradient_disk", "hmdb51"
    videos, names_by_class, titles = [], {}, 0
    for name in sorted(HMDB_CLASSES):
        names_by_class[name] = []
        clips_per_class = preset.hmdb_train_per_class + preset.hmdb_test_per_class + preset.hmdb_unused_per_class
        while len(names_by_class[name]) < clips_per_class:
            # one source video gives several numbered clips, as in the real set
            title = _hmdb_title(rng, titles)
            titles += 1
            for n in range(int(rng.integers(1, 4))):
                if len(names_by_class[name]) == clips_per_class:
                    break
                tags = (rng.choice(list("fuhl")), rng.choice(["cm", "nm"]), f"np{rng.choice([1, 1, 2, 3])}",
                        rng.choice(["fr", "ba", "le", "ri"]), rng.choice(["bad", "med", "goo"]))
                clip = f"{title}_{name}_{'_'.join(map(str, tags))}_{n}.avi"
                if clip in names_by_class[name]:
                    continue
                names_by_class[name].append(clip)
                width = int(rng.choice([320, 320, 320, 352, 426]))  # height 240, aspect kept
                videos.append(_job(f"{root}/videos/{name}/{clip}", str(rng.choice(HMDB_CLASSES[name])), style,
                                   (width, 240), HMDB_ENCODE, preset,
                                   (seed, DATASETS.index("hmdb51"), len(videos))))
    annotations, counts = {}, {}
    for split in (1, 2, 3):
        tag_totals = Counter()
        for name, clips in names_by_class.items():
            order = rng.permutation(len(clips))
            unused, test = preset.hmdb_unused_per_class, preset.hmdb_test_per_class
            tags = {clips[i]: 0 if k < unused else 2 if k < unused + test else 1 for k, i in enumerate(order)}
            tag_totals.update(tags.values())
            # real split files have a trailing space after the tag
            lines = "".join(f"{clip} {tags[clip]} \n" for clip in sorted(clips))
            annotations[f"{root}/testTrainMulti_7030_splits/{name}_test_split{split}.txt"] = lines.encode()
        counts[f"split{split}"] = {"train": tag_totals[1], "test": tag_totals[2], "unused": tag_totals[0]}
    info = _dataset_info("hmdb51", [style], HMDB_CLASSES, "mpeg4", videos, counts)
    return DatasetPlan("hmdb51", videos, annotations, info)


YOUTUBE_ID_CHARS = string.ascii_letters + string.digits + "_-"
KINETICS_SIZES = ((320, 240), (340, 256), (426, 240), (256, 340))


def _youtube_id(rng: np.random.Generator, leading_dash: bool) -> str:
    chars = rng.choice(list(YOUTUBE_ID_CHARS), size=11)
    if leading_dash or rng.random() < 0.1:
        chars[0] = "-"  # real ids may start with '-', which trips command-line tools
    return "".join(chars)


def _csv_label(label: str) -> str:
    # ActivityNet crawler CSVs quote exactly the labels that contain a space
    if '"' in label or "," in label:
        raise ValueError(f"Kinetics label {label!r} must not contain '\"' or ','")
    return f'"{label}"' if " " in label else label


def plan_kinetics400(preset: SizePreset, seed: int) -> DatasetPlan:
    rng = np.random.default_rng([seed, DATASETS.index("kinetics400")])
    root, header = "kinetics400", "label,youtube_id,time_start,time_end,split,is_cc"
    videos, annotations, counts, used_ids = [], {}, {}, set()
    for split, per_class in (("train", preset.kinetics_train_per_class), ("val", preset.kinetics_val_per_class)):
        rows = []
        for label in sorted(KINETICS_CLASSES):
            for _ in range(per_class):
                youtube_id = _youtube_id(rng, leading_dash=not rows)  # every split has one
                while youtube_id in used_ids:
                    youtube_id = _youtube_id(rng, leading_dash=not rows)
                used_ids.add(youtube_id)
                start = int(rng.integers(0, 300))
                rows.append((label, youtube_id, start, start + 10, int(rng.random() < 0.03)))
        # ~2% of the rows point at a video that was never downloaded (at least one per split)
        missing = set(rng.choice(len(rows), size=max(1, round(0.02 * len(rows))), replace=False).tolist())
        for index, (label, youtube_id, start, end, _) in enumerate(rows):
            if index in missing:
                continue
            encode = KINETICS_ENCODES[int(rng.integers(len(KINETICS_ENCODES)))]
            size = KINETICS_SIZES[int(rng.integers(len(KINETICS_SIZES)))]
            videos.append(_job(f"{root}/{split}/{label}/{youtube_id}_{start:06d}_{end:06d}.mp4",
                               str(rng.choice(KINETICS_CLASSES[label])), str(rng.choice(STYLES)), size, encode,
                               preset, (seed, DATASETS.index("kinetics400"), len(videos))))
        lines = [header] + [f"{_csv_label(label)},{yid},{s},{e},{split},{cc}" for label, yid, s, e, cc in rows]
        annotations[f"{root}/annotations/{split}.csv"] = ("\n".join(lines) + "\n").encode()
        counts[split] = {"csv_rows": len(rows), "missing_videos": len(missing)}
    info = _dataset_info("kinetics", list(STYLES), KINETICS_CLASSES, "h264", videos, counts)
    return DatasetPlan("kinetics400", videos, annotations, info)


def plan_ssv2(preset: SizePreset, seed: int) -> DatasetPlan:
    rng = np.random.default_rng([seed, DATASETS.index("ssv2")])
    style, root = "flat_arrow", "ssv2"
    templates = sorted(SSV2_TEMPLATES, key=lambda t: t.replace("[", "").replace("]", ""))
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}
    per_split = {"train": preset.ssv2_train_per_class, "validation": preset.ssv2_val_per_class,
                 "test": preset.ssv2_test_per_class}
    total = sum(per_split.values()) * len(templates)
    ids = iter(rng.choice(np.arange(1, 220848), size=total, replace=False).tolist())
    videos, entries = [], {split: [] for split in per_split}
    for split, per_class in per_split.items():
        for template in templates:
            for _ in range(per_class):
                video_id = str(next(ids))
                obj = str(rng.choice(SSV2_OBJECTS))
                text = template.replace("[something]", obj)
                entries[split].append({"id": video_id, "label": text[0].lower() + text[1:],
                                       "template": template, "placeholders": [obj]})
                width = int(rng.choice([320, 352, 426]))  # height 240, width varies
                videos.append(_job(f"{root}/20bn-something-something-v2/{video_id}.webm",
                                   str(rng.choice(SSV2_TEMPLATES[template])), style, (width, 240), SSV2_ENCODE,
                                   preset, (seed, DATASETS.index("ssv2"), len(videos))))
        order = rng.permutation(len(entries[split]))  # real files are not grouped by class
        entries[split] = [entries[split][i] for i in order]
    annotations = {f"{root}/labels/labels.json": json.dumps(labels, indent=1).encode()}
    for split, rows in entries.items():
        rows = [{"id": r["id"]} for r in rows] if split == "test" else rows
        annotations[f"{root}/labels/{split}.json"] = json.dumps(rows).encode()
    info = _dataset_info("ssv2", [style], {t.replace("[", "").replace("]", ""): SSV2_TEMPLATES[t] for t in templates},
                         "vp9", videos, {split: len(rows) for split, rows in entries.items()})
    return DatasetPlan("ssv2", videos, annotations, info)


PLANNERS = {"ucf101": plan_ucf101, "hmdb51": plan_hmdb51, "kinetics400": plan_kinetics400, "ssv2": plan_ssv2}


def render_job(job: VideoJob) -> np.ndarray:
    """The frames of one planned video (the same for the same job, whatever worker renders it)."""
    return render_clip(job.primitive, job.style, job.num_frames, job.width, job.height, np.random.default_rng(job.seed))


def _write_video(args: tuple[VideoJob, str]) -> tuple[str, bool, float]:
    """Render and encode one video unless it exists. Returns (path, rendered?, seconds)."""
    job, out = args
    target = Path(out) / job.path
    if target.exists():
        return job.path, False, 0.0
    started = time.perf_counter()
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    try:
        encode_video(render_job(job), partial, job.encode)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return job.path, True, time.perf_counter() - started


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    partial.write_bytes(data)
    os.replace(partial, path)


def _check_previous_run(out: Path, size: str, seed: int) -> None:
    """Refuse to mix two seeds or sizes in one folder: skipped videos would belong to the other run."""
    info_path = out / INFO_FILE
    if not info_path.exists():
        return
    previous = json.loads(info_path.read_text())
    if (previous.get("size"), previous.get("seed")) != (size, seed):
        raise SystemExit(f"{info_path}: written by --size {previous.get('size')} --seed {previous.get('seed')}, "
                         f"not --size {size} --seed {seed}; pick another --out or delete that folder")


def make_synthetic(out: Path, size: str, seed: int, workers: int, datasets: tuple[str, ...] = DATASETS,
                   progress: bool = True) -> dict:
    """Plan, render and write the datasets; returns the content of synthetic_info.json."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}: allowed values are {list(SIZES)}")
    unknown = [d for d in datasets if d not in PLANNERS]
    if unknown:
        raise ValueError(f"datasets {unknown}: allowed values are {list(PLANNERS)}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _check_previous_run(out, size, seed)
    for stale in out.rglob(f".*{PARTIAL_SUFFIX}"):  # left by an interrupted run
        stale.unlink()
    plans = [PLANNERS[name](SIZES[size], seed) for name in datasets]
    info = {"size": size, "seed": seed, "complete": False, "clip_seconds": CLIP_SECONDS,
            "primitives": list(PRIMITIVES), "styles": list(STYLES), "preset": asdict(SIZES[size]),
            "datasets": {plan.name: plan.info for plan in plans}}
    _write_atomic(out / INFO_FILE, json.dumps(info, indent=1).encode())

    # longest clips first so the last worker to finish is not stuck with a big one
    jobs = sorted((job for plan in plans for job in plan.videos), key=lambda j: -j.num_frames * j.width * j.height)
    dataset_of = {job.path: job.path.split("/", 1)[0] for job in jobs}
    rendered, skipped, busy = Counter(), Counter(), Counter()
    bar = tqdm(total=len(jobs), desc=f"synthetic {size}", unit="video", disable=not progress)
    tasks = [(job, str(out)) for job in jobs]
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            results = pool.imap_unordered(_write_video, tasks, chunksize=2)
            for path, was_rendered, seconds in results:
                (rendered if was_rendered else skipped)[dataset_of[path]] += 1
                busy[dataset_of[path]] += seconds
                bar.update()
    else:
        for task in tasks:
            path, was_rendered, seconds = _write_video(task)
            (rendered if was_rendered else skipped)[dataset_of[path]] += 1
            busy[dataset_of[path]] += seconds
            bar.update()
    bar.close()

    for plan in plans:  # annotations last: a listed split implies its videos are all there
        for rel, data in plan.annotations.items():
            _write_atomic(out / rel, data)
    seconds = time.perf_counter() - started
    info.update(complete=True, seconds=round(seconds, 1), workers=workers)
    _write_atomic(out / INFO_FILE, json.dumps(info, indent=1).encode())
    if progress:
        print(f"\n{'dataset':<12} {'videos':>7} {'rendered':>9} {'skipped':>8} {'worker s':>9}")
        for plan in plans:
            print(f"{plan.name:<12} {len(plan.videos):>7} {rendered[plan.name]:>9} {skipped[plan.name]:>8} "
                  f"{busy[plan.name]:>9.1f}")
        print(f"total {len(jobs)} videos in {seconds:.1f} s wall with {workers} worker(s) -> {out}")
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="folder that receives ucf101/, hmdb51/, kinetics400/, ssv2/ and synthetic_info.json")
    parser.add_argument("--size", choices=list(SIZES), default="demo",
                        help="tiny: 238 clips of 16 frames (tests; ~5 s); demo: 1812 clips of 2 s (~92 CPU s: "
                             "50-90 s wall on 2 cores); large: 4x demo")
    parser.add_argument("--seed", type=int, default=0,
                        help="fixes labels, file lists and frames; a folder holds one seed only")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes that render and encode videos (default: all cores; 1 = no subprocess)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS),
                        help="write only these datasets (default: all four)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: need at least 1")
    return make_synthetic(args.out, args.size, args.seed, args.workers, tuple(args.datasets))


if __name__ == "__main__":
    main()
