"""The GPU data path: NVIDIA DALI turns webdataset shards into the batches of `pipeline.contract`.

Same clips, crops and batch layout as the CPU loader; the decoding runs on NVDEC (device="gpu",
DALI's "mixed" video decoder, which decodes the samples of a batch in parallel) or, for tests and
GPU-less machines, on DALI's CPU decoder (device="cpu"; VP8/VP9/MJPEG only).

Two DALI pipelines, joined by a few lines of Python:

  sample pipeline (CPU, checkpointable)          clip pipeline (stateless)
  fn.readers.webdataset(<shard>.tar + .idx)  ->  external_source: video bytes, frame indices, crop
    video bytes, json bytes, source_info         boxes, flips, colour factors (drawn in Python)
                                                 -> fn.decoders.video(frames=...)  (mixed | cpu)
                                                 -> fn.resize(ROI = crop box) -> fn.flip [-> colour]
                                                 -> fn.transpose to [3, T, H, W], uint8

Why two pipelines: in DALI 2.4 `fn.decoders.video` does not implement checkpointing, so a pipeline
built with enable_checkpointing=True that contains it fails ("Checkpointing is not implemented for
this operator"). The reader is the only state that matters: every random parameter is drawn with
`pipeline.clips` / `pipeline.augment` (the CPU loader's own samplers) from a torch.Generator seeded
by (seed, rank, batch index). A loader checkpoint = the reader's DALI checkpoint + the batch index.

Why not DALIGenericIterator: DALI fails a whole batch when one sample does not decode (it cannot
skip a sample). The loader must then find that sample and decode the batch again without it, which
the iterator's prefetch queue cannot do. The join uses the iterator's own tensor conversion
(DLPack, `to_torch_tensor`) and keeps one batch decoding while the trainer works on the current one.

Corrupt samples: when a batch fails, each of its samples is decoded alone to find the culprits;
training replaces a culprit by a copy of another sample of the same batch (batch size stays B),
evaluation drops it (the batch shrinks). Every skipped key is counted (`skipped_keys`) and reported
in the batch's SKIPPED_KEYS. A truncated file that still opens is not an error for DALI: missing
frames repeat the last decoded one (pad_mode="edge").

Batches from device="gpu" are on the GPU already (the contract's `.to(device)` is then a no-op).
"""
from __future__ import annotations

import base64
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline import augment as aug
from pipeline.clips import eval_clip_indices, train_clip_indices
from pipeline.dali_index import write_index
from pipeline.contract import (KEY, LABEL, SKIPPED_KEYS, STRONG_VIDEO, VIDEO, AugmentSpec, ClipSpec,
                               StrongAugmentSpec)
from pipeline.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)

DEVICES = ("gpu", "cpu")
# Codecs the PyPI build of DALI decodes on the CPU (the "mixed" decoder adds H.264, HEVC, AV1, MPEG-4).
CPU_DECODABLE = ("vp8", "vp9", "mjpeg")
_LUMA = (0.299, 0.587, 0.114)  # same weights as pipeline.augment


# ---------------------------------------------------------------- shards and index files
@dataclass(frozen=True)
class ShardSet:
    """The tar files of one split with their DALI index files, and the video member's extension."""

    tars: list[str]
    indexes: list[str]
    video_ext: str
    codec: str
    samples: int
    manifest: Manifest


def split_shards(shard_dir: str | Path, split: str, device: str, *,
                 build_missing_index: bool = False) -> ShardSet:
    """The shards of `split` from the manifest, checked for what the DALI reader needs.

    Raises ValueError for H.264 shards on the CPU backend and FileNotFoundError for a missing index
    file (unless `build_missing_index`, which writes it next to the tar).
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: allowed values are {DEVICES}")
    manifest = load_manifest(shard_dir)
    codec = manifest.encode.codec.lower()
    if device == "cpu" and codec not in CPU_DECODABLE:
        raise ValueError(
            f"{manifest.shard_dir}: shards are {codec} ({manifest.encode.container}); DALI's CPU video "
            f"decoder reads only {', '.join(CPU_DECODABLE)}. Use a GPU (device='gpu') or re-shard with "
            f"`tools/make_shards.py --codec vp9`.")
    info = manifest.split_info(split)
    if not info.shards:
        raise ValueError(f"{manifest.shard_dir}: split {split!r} has no shards")
    tars, indexes = [], []
    for shard in info.shards:
        tar = manifest.shard_dir / shard.file
        index = manifest.shard_dir / (shard.index or Path(shard.file).with_suffix(".idx").name)
        if not tar.is_file():
            raise FileNotFoundError(f"shard {tar} (listed in {manifest.shard_dir}/manifest.json) is missing")
        if not index.is_file():
            if not build_missing_index:
                raise FileNotFoundError(
                    f"DALI index file {index} for shard {tar.name} is missing: rerun tools/make_shards.py, "
                    f"or run `wds2idx {tar} {index}`, or pass build_missing_index=True")
            log.warning("writing missing DALI index %s", index)
            write_index(tar, index)
        tars.append(str(tar))
        indexes.append(str(index))
    return ShardSet(tars, indexes, manifest.encode.container, codec, info.samples, manifest)


def shard_range(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The samples [begin, end) that DALI's reader gives `rank` of `world_size` (its own formula)."""
    return num_samples * rank // world_size, num_samples * (rank + 1) // world_size


# ---------------------------------------------------------------- the two DALI graphs
def _sample_pipeline(shards: ShardSet, *, batch_size: int, rank: int, world_size: int, train: bool,
                     seed: int, checkpoint: str | None):
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(enable_checkpointing=True)
    def graph():
        video, meta = fn.readers.webdataset(
            paths=shards.tars, index_paths=shards.indexes, ext=[shards.video_ext, "json"],
            missing_component_behavior="error", shard_id=rank, num_shards=world_size,
            random_shuffle=train, initial_fill=1024, seed=seed,
            # evaluation: every sample of this rank's shard exactly once per pass, in stored order
            stick_to_shard=not train, pad_last_batch=not train, name="reader")
        return video, meta, fn.get_property(video, key="source_info")

    return graph(batch_size=batch_size, num_threads=1, device_id=None, seed=seed, checkpoint=checkpoint)


def _strong_colour(clip, brightness, contrast, saturation, grayscale):
    """pipeline.augment.strong_view's colour maths in DALI arithmetic (float32, rounded to uint8)."""
    from nvidia.dali import fn, types

    def luma(x):
        return x[:, :, :, 0] * _LUMA[0] + x[:, :, :, 1] * _LUMA[1] + x[:, :, :, 2] * _LUMA[2]

    x = fn.cast(clip, dtype=types.FLOAT) * brightness
    mean = fn.reductions.mean(luma(x))  # one mean per clip, so contrast does not flicker over frames
    x = (x - mean) * contrast + mean
    y = fn.expand_dims(luma(x), axes=[3], new_axis_names="C")
    x = (x - y) * saturation + y
    x = x * (1.0 - grayscale) + fn.expand_dims(luma(x), axes=[3], new_axis_names="C") * grayscale
    return fn.cast(x, dtype=types.UINT8)  # DALI's cast rounds to nearest and saturates


def _clip_pipeline(clip: ClipSpec, *, mode: str, device: str, batch_size: int, num_threads: int,
                   device_id: int | None, strong: bool):
    """mode "train": one view [3, T, S, S] (+ a strong view); mode "eval": [V, 3, T, S, S]."""
    from nvidia.dali import fn, pipeline_def, types

    size = [clip.crop_size, clip.crop_size]
    on_gpu = device == "gpu"

    def source(name, dtype, ndim):
        return fn.external_source(name=name, dtype=dtype, ndim=ndim)

    def crop(frames, start, end):  # crop + resize in one resampling, like augment.resized_crop
        return fn.resize(frames, size=size, roi_start=start, roi_end=end, roi_relative=True,
                         interp_type=types.INTERP_LINEAR, antialias=True)

    def colour_factor(name):
        node = source(name, types.FLOAT, 0)
        return node.gpu() if on_gpu else node

    @pipeline_def(prefetch_queue_depth=1)  # the Python join keeps exactly one batch in flight
    def graph():
        video = source("video", types.UINT8, 1)
        frame_ids = source("frames", types.INT32, 1)
        frames = fn.decoders.video(video, device="mixed" if on_gpu else "cpu", frames=frame_ids,
                                   pad_mode="edge")  # [T or clips*T, H, W, 3]
        if mode == "eval":
            views = [crop(frames, source(f"roi_start{c}", types.FLOAT, 1), source(f"roi_end{c}", types.FLOAT, 1))
                     for c in range(clip.test_crops)]
            stacked = fn.stack(*views, axis=0) if len(views) > 1 else fn.expand_dims(views[0], axes=[0])
            # [crops, clips*T, S, S, 3] -> [clips, crops, 3, T, S, S] -> [V, 3, T, S, S], v = clip*crops + crop
            stacked = fn.reshape(stacked, shape=[clip.test_crops, clip.test_clips, clip.frames, *size, 3],
                                 layout="")
            stacked = fn.transpose(stacked, perm=[1, 0, 5, 2, 3, 4])
            return fn.reshape(stacked, shape=[clip.views, 3, clip.frames, *size], layout="")
        weak = fn.flip(crop(frames, source("roi_start", types.FLOAT, 1), source("roi_end", types.FLOAT, 1)),
                       horizontal=source("flip", types.INT32, 0))
        outputs = [fn.transpose(weak, perm=[3, 0, 1, 2])]
        if strong:
            view = fn.flip(crop(frames, source("s_roi_start", types.FLOAT, 1), source("s_roi_end", types.FLOAT, 1)),
                           horizontal=source("s_flip", types.INT32, 0))
            view = _strong_colour(view, colour_factor("brightness"), colour_factor("contrast"),
                                  colour_factor("saturation"), colour_factor("grayscale"))
            view = fn.erase(view, anchor=source("cut_anchor", types.FLOAT, 1), shape=source("cut_shape", types.FLOAT, 1),
                            axis_names="HW", fill_value=128)
            outputs.append(fn.transpose(view, perm=[3, 0, 1, 2]))
        return tuple(outputs)

    return graph(batch_size=batch_size, num_threads=num_threads, device_id=device_id)


# ---------------------------------------------------------------- per-sample parameters (Python)
@dataclass(eq=False)  # identity: two reads of one key are two samples
class _Sample:
    video: np.ndarray  # encoded bytes (uint8)
    key: str
    label: int
    num_frames: int
    height: int
    width: int


def _parse_sample(video, meta, source_info) -> _Sample:
    # source_info is "<tar path>:<offset>:<member name>"; the key is the member name without extension
    member = bytes(np.asarray(source_info)).decode().rsplit(":", 1)[-1]
    key = member.split(".", 1)[0]
    info = json.loads(bytes(np.asarray(meta)))
    return _Sample(np.array(video), key, int(info["label"]), int(info["frames"]),
                   int(info["height"]), int(info["width"]))


def _box_roi(box: aug.Box, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    top, left, crop_h, crop_w = box
    return (np.array([top / height, left / width], np.float32),
            np.array([(top + crop_h) / height, (left + crop_w) / width], np.float32))


def _train_params(sample: _Sample, clip: ClipSpec, augment: AugmentSpec, strong: StrongAugmentSpec | None,
                  generator: torch.Generator) -> dict[str, np.ndarray]:
    """One sample's frame indices and augmentation draws, in the order pipeline.augment draws them."""
    frames = train_clip_indices(sample.num_frames, clip, generator, augment.time_reversal)
    box = aug.random_resized_crop_box(sample.height, sample.width, augment.min_scale, augment.max_aspect, generator)
    start, end = _box_roi(box, sample.height, sample.width)
    flip = augment.hflip and bool(torch.rand((), generator=generator) < 0.5)
    params = {"video": sample.video, "frames": np.array(frames, np.int32), "roi_start": start, "roi_end": end,
              "flip": np.array(int(flip), np.int32)}
    if strong is None:
        return params
    box = aug.random_resized_crop_box(sample.height, sample.width, strong.min_scale, strong.max_aspect, generator)
    start, end = _box_roi(box, sample.height, sample.width)
    s_flip = augment.hflip and bool(torch.rand((), generator=generator) < 0.5)
    factors = [aug._uniform(generator, 1 - x, 1 + x) for x in (strong.brightness, strong.contrast, strong.saturation)]
    grayscale = bool(torch.rand((), generator=generator) < strong.grayscale_p)
    anchor, shape = [0.0, 0.0], [0.0, 0.0]  # an empty rectangle: no cutout
    if bool(torch.rand((), generator=generator) < strong.cutout_p):
        size = clip.crop_size
        area = size * size * aug._uniform(generator, *strong.cutout_area)
        aspect = math.exp(aug._uniform(generator, -math.log(2), math.log(2)))
        cut_h = min(size, max(1, int(round(math.sqrt(area / aspect)))))
        cut_w = min(size, max(1, int(round(math.sqrt(area * aspect)))))
        anchor = [aug._randint(generator, 0, size - cut_h), aug._randint(generator, 0, size - cut_w)]
        shape = [cut_h, cut_w]
    params.update({"s_roi_start": start, "s_roi_end": end, "s_flip": np.array(int(s_flip), np.int32),
                   "brightness": np.float32(factors[0]), "contrast": np.float32(factors[1]),
                   "saturation": np.float32(factors[2]), "grayscale": np.float32(grayscale),
                   "cut_anchor": np.array(anchor, np.float32), "cut_shape": np.array(shape, np.float32)})
    return params


def _eval_params(sample: _Sample, clip: ClipSpec) -> dict[str, np.ndarray]:
    frames = [i for indices in eval_clip_indices(sample.num_frames, clip, clip.test_clips) for i in indices]
    params = {"video": sample.video, "frames": np.array(frames, np.int32)}
    for c, box in enumerate(aug.eval_crop_boxes(sample.height, sample.width, clip.test_crops)):
        params[f"roi_start{c}"], params[f"roi_end{c}"] = _box_roi(box, sample.height, sample.width)
    return params


# ---------------------------------------------------------------- the Python join
class _DaliClips:
    """Feeds samples into the clip pipeline, one batch in flight; repairs batches with corrupt samples."""

    def __init__(self, clip_pipe, on_gpu: bool, output_names: tuple[str, ...]):
        self.pipe = clip_pipe
        self.on_gpu = on_gpu
        self.output_names = output_names
        self.in_flight = False

    def submit(self, params: list[dict[str, np.ndarray]]) -> None:
        for name in params[0]:
            self.pipe.feed_input(name, [p[name] for p in params])
        self.pipe.schedule_run()
        self.in_flight = True

    def collect(self) -> dict[str, torch.Tensor] | Exception:
        """The batch in flight as torch tensors, or the exception DALI raised for it."""
        from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor

        self.in_flight = False
        try:
            outputs = self.pipe.outputs()
        except RuntimeError as error:
            return error
        # exec_dynamic outputs own their memory, so DLPack hands it to torch without a copy
        return {name: to_torch_tensor(out.as_tensor(), copy=not self.pipe.exec_dynamic)
                for name, out in zip(self.output_names, outputs)}

    def decodable(self, params: dict[str, np.ndarray]) -> bool:
        """Decode one sample alone (a batch of one) to see whether DALI can."""
        self.submit([params])
        return not isinstance(self.collect(), Exception)

    def drain(self) -> None:
        if self.in_flight:
            self.collect()


class _LoaderBase:
    def __init__(self, shard_dir, split, clip: ClipSpec, *, batch_size: int, rank: int, world_size: int,
                 seed: int, device: str, num_threads: int, build_missing_index: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        self.shards = split_shards(shard_dir, split, device, build_missing_index=build_missing_index)
        self.split, self.clip, self.batch_size = split, clip, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.device, self.num_threads = device, num_threads
        self.skipped_keys: list[str] = []
        self._reader = None
        self._clips: _DaliClips | None = None

    @property
    def manifest(self) -> Manifest:
        return self.shards.manifest

    def _device_id(self) -> int | None:
        return torch.cuda.current_device() if self.device == "gpu" else None

    def _read(self) -> list[_Sample]:
        video, meta, info = self._reader.run()
        return [_parse_sample(video[i], meta[i], info[i]) for i in range(len(video))]

    def _decode(self, samples: list[_Sample], params_of, replace_bad: bool):
        """Collect the batch in flight; if DALI failed it, find and drop/replace the corrupt samples,
        resubmit and collect again. Returns (tensors, samples actually in the batch, skipped keys)."""
        skipped: list[str] = []
        while True:
            result = self._clips.collect()
            if not isinstance(result, Exception):
                return result, samples, skipped
            bad = [s for s in samples if not self._clips.decodable(params_of([s])[0])]
            if not bad:
                raise result  # not a sample problem: a bug or a broken device
            for s in bad:
                log.warning("skipping undecodable sample %s (%s)", s.key, str(result).splitlines()[0])
            skipped += [s.key for s in bad]
            self.skipped_keys += [s.key for s in bad]
            good = [s for s in samples if s not in bad]
            if replace_bad and good:
                samples = [s if s not in bad else good[i % len(good)] for i, s in enumerate(samples)]
            else:
                samples = good
            if not samples:
                return None, samples, skipped
            self._clips.submit(params_of(samples))

    def close(self) -> None:
        if self._clips is not None:
            self._clips.drain()
        self._reader, self._clips = None, None


class DaliTrainLoader(_LoaderBase):
    """`steps_per_epoch` training batches per `iter()`, from an endless shuffled reader.

    state_dict()/load_state_dict() resume exactly: the next batch after a restore equals the one the
    saved loader would have produced next.
    """

    def __init__(self, shard_dir, split, clip: ClipSpec, augment: AugmentSpec, *, batch_size: int,
                 steps_per_epoch: int, rank: int = 0, world_size: int = 1, seed: int = 0, device: str = "gpu",
                 strong_view: bool | StrongAugmentSpec = False, num_threads: int = 2,
                 build_missing_index: bool = False):
        super().__init__(shard_dir, split, clip, batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=seed, device=device, num_threads=num_threads, build_missing_index=build_missing_index)
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch={steps_per_epoch}: must be >= 1")
        manifest = self.manifest
        for flag, option in (("hflip_changes_label", "hflip"), ("time_reversal_changes_label", "time_reversal")):
            if getattr(augment, option) and getattr(manifest, flag):  # same refusal as the CPU loader
                raise ValueError(f"{manifest.shard_dir / 'manifest.json'}: {flag} is true for dataset "
                                 f"{manifest.dataset!r}, so AugmentSpec.{option} must be False "
                                 f"(use AugmentSpec.label_safe(...))")
        self.augment = augment
        self.strong = StrongAugmentSpec() if strong_view is True else (strong_view or None)
        self.steps_per_epoch = steps_per_epoch
        self._batches_done = 0  # batches handed to the caller
        self._reader_state: bytes | None = None  # reader checkpoint after the last handed-out batch
        self._pending = None  # (batch index, samples, reader checkpoint) of the batch in flight

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _build(self) -> None:
        # shuffle seed differs per rank; the shard split itself does not depend on it
        self._reader = _sample_pipeline(self.shards, batch_size=self.batch_size, rank=self.rank,
                                        world_size=self.world_size, train=True, seed=self.seed * 1009 + self.rank,
                                        checkpoint=self._reader_state)
        self._reader.build()
        names = (VIDEO, STRONG_VIDEO) if self.strong else (VIDEO,)
        self._clips = _DaliClips(_clip_pipeline(self.clip, mode="train", device=self.device,
                                                batch_size=self.batch_size, num_threads=self.num_threads,
                                                device_id=self._device_id(), strong=self.strong is not None),
                                 self.device == "gpu", names)
        self._clips.pipe.build()

    def _params_of(self, index: int):
        def params_of(samples: list[_Sample]) -> list[dict[str, np.ndarray]]:
            state = np.random.SeedSequence([self.seed, self.rank, index]).generate_state(2, np.uint32)
            generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            return [_train_params(s, self.clip, self.augment, self.strong, generator) for s in samples]
        return params_of

    def _submit(self, index: int) -> None:
        samples = self._read()
        self._pending = (index, samples, self._reader.checkpoint())
        self._clips.submit(self._params_of(index)(samples))

    def _next_batch(self) -> dict:
        if self._reader is None:
            self._build()
        if self._pending is None:
            self._submit(self._batches_done)
        index, samples, reader_state = self._pending
        tensors, samples, skipped = self._decode(samples, self._params_of(index), replace_bad=True)
        while tensors is None:  # every sample was corrupt: this batch index takes the next reader batch
            self._submit(index)
            _, samples, reader_state = self._pending
            tensors, samples, more_skipped = self._decode(samples, self._params_of(index), replace_bad=True)
            skipped += more_skipped
        self._batches_done, self._reader_state = index + 1, reader_state
        self._submit(index + 1)  # decode the next batch while the caller trains on this one
        batch = dict(tensors)
        batch[LABEL] = torch.tensor([s.label for s in samples], dtype=torch.int64)
        batch[KEY] = [s.key for s in samples]
        batch[SKIPPED_KEYS] = skipped
        return batch

    def __iter__(self) -> Iterator[dict]:
        for _ in range(self.steps_per_epoch):
            yield self._next_batch()

    def state_dict(self) -> dict:
        """Enough to resume exactly: the reader's DALI checkpoint and the batch counter."""
        if self._reader is None and self._reader_state is None and self._batches_done == 0:
            self._build()  # a checkpoint of the untouched reader
            self._reader_state = self._reader.checkpoint()
        # DALI's checkpoint is protobuf bytes; base64 keeps the state JSON- and YAML-safe
        return {"reader": base64.b64encode(self._reader_state).decode("ascii"), "batches_done": self._batches_done,
                "skipped_keys": list(self.skipped_keys), "rank": self.rank, "world_size": self.world_size,
                "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for name in ("rank", "world_size", "seed"):
            if state[name] != getattr(self, name):
                raise ValueError(f"loader state was saved with {name}={state[name]}, this loader has "
                                 f"{name}={getattr(self, name)}")
        self.close()
        self._pending = None
        self._reader_state, self._batches_done = base64.b64decode(state["reader"]), state["batches_done"]
        self.skipped_keys = list(state["skipped_keys"])


class DaliEvalLoader(_LoaderBase):
    """Every sample of this rank's part of the split once per `iter()`, in stored order, as
    [B, V, 3, T, S, S] views (V = clips x crops, v = clip * crops + crop); the last batch may be smaller."""

    def __init__(self, shard_dir, split, clip: ClipSpec, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 multi_view: bool = False, device: str = "gpu", num_threads: int = 2,
                 build_missing_index: bool = False):
        if not multi_view:  # the centre clip's centre crop only, as the CPU loader
            clip = replace(clip, test_clips=1, test_crops=1)
        super().__init__(shard_dir, split, clip, batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=0, device=device, num_threads=num_threads, build_missing_index=build_missing_index)
        begin, end = shard_range(self.shards.samples, rank, world_size)
        self.num_samples = end - begin
        self._pass_complete = True

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _build(self) -> None:
        self._reader = _sample_pipeline(self.shards, batch_size=self.batch_size, rank=self.rank,
                                        world_size=self.world_size, train=False, seed=0, checkpoint=None)
        self._reader.build()
        self._clips = _DaliClips(_clip_pipeline(self.clip, mode="eval", device=self.device,
                                                batch_size=self.batch_size, num_threads=self.num_threads,
                                                device_id=self._device_id(), strong=False),
                                 self.device == "gpu", (VIDEO,))
        self._clips.pipe.build()

    def __iter__(self) -> Iterator[dict]:
        if self._reader is not None and not self._pass_complete:
            self.close()  # an abandoned pass left the reader mid-shard: start from the shard's beginning
        if self._reader is None:
            self._build()
        self._pass_complete = False

        def params_of(samples):
            return [_eval_params(s, self.clip) for s in samples]

        remaining = self.num_samples
        samples = None
        for _ in range(len(self)):
            if samples is None:
                samples = self._read()[:remaining]  # pad_last_batch repeats the last sample: trim
                self._clips.submit(params_of(samples))
            remaining -= len(samples)
            current = samples
            tensors, current, skipped = self._decode(current, params_of, replace_bad=False)
            samples = None
            if remaining > 0:  # decode the next batch while the caller evaluates this one
                samples = self._read()[:remaining]
                self._clips.submit(params_of(samples))
            if tensors is None:
                size = self.clip.crop_size
                tensors = {VIDEO: torch.empty((0, self.clip.views, 3, self.clip.frames, size, size), dtype=torch.uint8,
                                              device="cuda" if self.device == "gpu" else "cpu")}
            if remaining == 0:
                self._pass_complete = True
            yield {VIDEO: tensors[VIDEO], LABEL: torch.tensor([s.label for s in current], dtype=torch.int64),
                   KEY: [s.key for s in current], SKIPPED_KEYS: skipped}
        self._pass_complete = True


def refuse_modalities(modalities) -> None:
    """The DALI loader decodes video only: compressed-domain entries (npz members, read on the CPU)
    come from the torch loader, pipeline/cpu_loader.py."""
    if modalities:
        raise ValueError(f"the DALI loader does not return the compressed-domain keys {list(modalities)} "
                         f"(mv, residual, iframe): use the torch loader (pipeline/cpu_loader.py, "
                         f"data.loader=torch), which reads them from the shards' npz members")


def dali_train_loader(shard_dir, split, clip: ClipSpec, augment: AugmentSpec, *, batch_size: int,
                      steps_per_epoch: int, rank: int = 0, world_size: int = 1, seed: int = 0, device: str = "gpu",
                      strong_view: bool | StrongAugmentSpec = False, num_threads: int = 2,
                      build_missing_index: bool = False, modalities: tuple[str, ...] = ()) -> DaliTrainLoader:
    """Training batches {VIDEO, [STRONG_VIDEO], LABEL, KEY, SKIPPED_KEYS}: exactly `steps_per_epoch`
    per iteration over the loader. `strong_view=True` uses the default StrongAugmentSpec."""
    refuse_modalities(modalities)
    return DaliTrainLoader(shard_dir, split, clip, augment, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                           rank=rank, world_size=world_size, seed=seed, device=device, strong_view=strong_view,
                           num_threads=num_threads, build_missing_index=build_missing_index)


def dali_eval_loader(shard_dir, split, clip: ClipSpec, *, batch_size: int, rank: int = 0, world_size: int = 1,
                     multi_view: bool = False, device: str = "gpu", num_threads: int = 2,
                     build_missing_index: bool = False, modalities: tuple[str, ...] = ()) -> DaliEvalLoader:
    """Evaluation batches {VIDEO [B, V, 3, T, S, S], LABEL, KEY, SKIPPED_KEYS}, one pass per iteration.
    V = 1 (centre clip, centre crop) unless multi_view, then V = test_clips * test_crops, clip-major."""
    refuse_modalities(modalities)
    return DaliEvalLoader(shard_dir, split, clip, batch_size=batch_size, rank=rank, world_size=world_size,
                          multi_view=multi_view, device=device, num_threads=num_threads, build_missing_index=build_missing_index)
