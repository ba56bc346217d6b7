"""Compressed-domain modalities of a shard video: motion vectors, residuals and I-frames (PKD + WISE,
../shared/METHOD.md section 2).

They are read from the stored (re-encoded) video itself, so they describe exactly the bytes the sample
holds: the decoder exports each P-frame's motion vectors (FFmpeg `flags2=+export_mvs`, frame side data
MOTION_VECTORS), the residual is that P-frame minus its reference (the previous decoded frame: shard
videos have no B-frames and x264's `veryfast` preset keeps one reference frame) warped by those
vectors, and the I-frames are the keyframes on the method's segment grid (K equal segments per video).

Per sample, one tar member per modality (deterministic zip bytes, arrays stored with np.lib.format):
  <key>.mv.npz        mv  float16 [T, 2, ceil(H/b), ceil(W/b)]  (dx, dy) per b x b block, in pixels,
                                  FFmpeg's sign: the block's source in the reference is at +(dx, dy)
                                  (content moving right by d gives dx = -d); zero on I-frames and on
                                  intra blocks.  frame_types uint8 [T] (1 = I, 2 = P).
  <key>.residual.npz  residual int16 [T, H, W, 3]  P-frame minus motion-compensated reference (RGB,
                                  -255..255); zero on I-frames.
  <key>.iframe.npz    iframe uint8 [K, H, W, 3]  the latest keyframe at or before each segment's
                                  middle frame;  index int32 [K] (their frame indices).
"""
from __future__ import annotations

import io
import math
import warnings
import zipfile
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

MODALITIES = ("mv", "residual", "iframe")
MEMBER_EXT = {name: f"{name}.npz" for name in MODALITIES}  # tar member extension per modality
I_FRAME, P_FRAME = 1, 2


class NoMotionVectorsError(Exception):
    """The video has P-frames but its decoder exported no motion vectors (e.g. VP9: FFmpeg's vp9
    decoder does not implement export_mvs). The message names the video and the codec."""


class AllIntraWarning(UserWarning):
    """A video without P-frames: its motion vectors and residuals are all zero."""


@dataclass(frozen=True)
class CompressedSettings:
    modalities: tuple[str, ...]
    segments: int = 4  # K: I-frames per video, and the segments the nets average over
    mv_block: int = 4  # motion field cell size in pixels (H.264's smallest partition)

    def __post_init__(self):
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown:
            raise ValueError(f"modalities {unknown}: allowed values are {list(MODALITIES)}")
        if self.segments < 1 or self.mv_block < 1:
            raise ValueError(f"segments={self.segments}, mv_block={self.mv_block}: both must be >= 1")


def parse_modalities(text: str) -> tuple[str, ...]:
    """'mv,residual,iframe' -> ('mv', 'residual', 'iframe'); '' or 'none' -> ()."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if names in ((), ("none",)):
        return ()
    unknown = [name for name in names if name not in MODALITIES]
    if unknown:
        raise ValueError(f"--modalities {text!r}: unknown {unknown}; allowed values are {list(MODALITIES)} or none")
    return names


# --- segment grid --------------------------------------------------------------------------------

def segment_bounds(num_frames: int, segments: int) -> list[tuple[int, int]]:
    """K nearly equal [start, end) frame ranges covering the video (a segment of a very short video
    may be a single repeated frame)."""
    edges = [round(k * num_frames / segments) for k in range(segments + 1)]
    bounds = []
    for k in range(segments):
        start = min(edges[k], num_frames - 1)
        bounds.append((start, max(edges[k + 1], start + 1)))
    return bounds


def iframe_indices(frame_types: np.ndarray, segments: int) -> np.ndarray:
    """Per segment, the latest keyframe at or before the segment's middle frame (frame 0 is one)."""
    keyframes = np.flatnonzero(frame_types == I_FRAME)
    picked = []
    for start, end in segment_bounds(len(frame_types), segments):
        middle = (start + end - 1) // 2
        before = keyframes[keyframes <= middle]
        picked.append(int(before[-1]) if len(before) else 0)
    return np.asarray(picked, dtype=np.int32)


def segment_frames(frame_types: np.ndarray, segments: int, generator=None) -> list[int]:
    """One frame per segment for the MV and residual nets: a P-frame of the segment (uniformly drawn
    with a torch `generator`, else the one nearest the middle), or the middle frame if it has none."""
    picked = []
    for start, end in segment_bounds(len(frame_types), segments):
        candidates = [t for t in range(start, end) if frame_types[t] == P_FRAME] or [(start + end - 1) // 2]
        if generator is not None:
            import torch

            picked.append(candidates[int(torch.randint(len(candidates), (1,), generator=generator))])
        else:
            middle = (start + end - 1) / 2
            picked.append(min(candidates, key=lambda t: (abs(t - middle), t)))
    return picked


# --- extraction ----------------------------------------------------------------------------------

def rasterise(vectors: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """FFmpeg AVMotionVector records -> float32 [H, W, 2] per-pixel (dx, dy) = (src - dst) in pixels.
    Only vectors into the past reference (source < 0) are used; shard videos have no B-frames."""
    field = np.zeros((height, width, 2), np.float32)
    if vectors is None or len(vectors) == 0:
        return field
    for record in vectors[vectors["source"] < 0]:
        w, h = int(record["w"]), int(record["h"])
        x0, y0 = int(record["dst_x"]) - w // 2, int(record["dst_y"]) - h // 2
        scale = float(record["motion_scale"]) or 1.0
        field[max(y0, 0):max(y0 + h, 0), max(x0, 0):max(x0 + w, 0)] = (
            record["motion_x"] / scale, record["motion_y"] / scale)
    return field


def block_average(field: np.ndarray, block: int) -> np.ndarray:
    """[H, W, 2] -> [2, ceil(H/b), ceil(W/b)]: mean over each b x b cell (edge cells padded by repetition)."""
    height, width = field.shape[:2]
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    padded = np.pad(field, ((0, rows * block - height), (0, cols * block - width), (0, 0)), mode="edge")
    return padded.reshape(rows, block, cols, block, 2).mean(axis=(1, 3)).transpose(2, 0, 1)


def motion_compensate(reference: np.ndarray, field: np.ndarray) -> np.ndarray:
    """reference [H, W, 3] sampled at (x + dx, y + dy) with bilinear interpolation, borders clamped."""
    height, width = reference.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    x = np.clip(xs + field[..., 0], 0, width - 1)
    y = np.clip(ys + field[..., 1], 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    ref = reference.astype(np.float32)
    top = ref[y0, x0] * (1 - fx) + ref[y0, x1] * fx
    bottom = ref[y1, x0] * (1 - fx) + ref[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def extract(video: bytes, settings: CompressedSettings, name: str = "?") -> dict[str, dict[str, np.ndarray]]:
    """The requested modalities of one encoded video: {modality: {array name: array}} (see module doc).

    Raises NoMotionVectorsError when the video has P-frames but the decoder exports no vectors;
    warns once (AllIntraWarning, naming `name`) for a video without P-frames.
    """
    frames, types, fields = [], [], []
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        codec = stream.codec_context.name
        reformatter = VideoReformatter()
        exported = False
        for frame in container.decode(stream):
            rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
            kind = P_FRAME if int(frame.pict_type) == P_FRAME else I_FRAME
            vectors = None
            for side in frame.side_data:
                if type(side).__name__ == "MotionVectors":
                    vectors, exported = side.to_ndarray(), True
            frames.append(rgb)
            types.append(kind)
            fields.append(rasterise(vectors, *rgb.shape[:2]) if kind == P_FRAME else None)
    frame_types = np.asarray(types, np.uint8)
    has_p = bool((frame_types == P_FRAME).any())
    if has_p and not exported:
        raise NoMotionVectorsError(f"{name}: codec {codec!r} exports no motion vectors (FFmpeg's {codec} decoder "
                                   f"does not implement export_mvs); use --codec h264")
    if not has_p:
        warnings.warn(f"{name}: no P-frames (all {len(frames)} frames intra-coded): motion vectors and residuals "
                      f"are all zero", AllIntraWarning, stacklevel=2)
    height, width = frames[0].shape[:2]
    zero_field = np.zeros((height, width, 2), np.float32)
    fields = [zero_field if f is None else f for f in fields]
    out: dict[str, dict[str, np.ndarray]] = {}
    if "mv" in settings.modalities:
        out["mv"] = {"mv": np.stack([block_average(f, settings.mv_block) for f in fields]).astype(np.float16),
                     "frame_types": frame_types}
    if "residual" in settings.modalities:
        residual = np.zeros((len(frames), height, width, 3), np.int16)
        for t in range(1, len(frames)):
            if frame_types[t] == P_FRAME:
                predicted = np.rint(motion_compensate(frames[t - 1], fields[t])).astype(np.int16)
                residual[t] = frames[t].astype(np.int16) - predicted
        out["residual"] = {"residual": residual, "frame_types": frame_types}
    if "iframe" in settings.modalities:
        index = iframe_indices(frame_types, settings.segments)
        out["iframe"] = {"iframe": np.stack([frames[i] for i in index]), "index": index}
    return out


# --- member bytes --------------------------------------------------------------------------------

def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed's format with fixed zip timestamps, so a rerun writes equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


# --- what a loader returns -----------------------------------------------------------------------

def centre_square(height: int, width: int, block: int) -> tuple[int, int, int]:
    """(top, left, side) of the centred square of side min(H, W), its corner on the block grid so
    that the motion field's cells and the pixels are cropped alike."""
    side = min(height, width)
    return ((height - side) // 2 // block) * block, ((width - side) // 2 // block) * block, side


def _crop(array: np.ndarray, top: int, left: int, side: int, block: int = 1) -> np.ndarray:
    """Crop the last two axes of [..., H, W] (pixels, or cells of `block` pixels)."""
    size = math.ceil(side / block)
    return array[..., top // block:top // block + size, left // block:left // block + size]


def segment_arrays(members: dict[str, bytes], modalities: tuple[str, ...], segments: int, frame_size: tuple[int, int],
                   mv_block: int, key: str = "?", generator=None) -> dict[str, np.ndarray]:
    """Per modality, K segments in the batch contract's layout (pipeline/contract.py), cropped to the
    centred square of side S = the short side (videos of one data set may differ in aspect ratio):
    mv float16 [K, 2, ceil(S/b), ceil(S/b)], residual float16 [K, 3, S, S], iframe uint8 [K, 3, S, S].
    `members` maps member extension -> bytes, `frame_size` is the video's (height, width) (its json);
    the MV and residual frame of each segment come from `segment_frames` (drawn with `generator` in
    training, the middle P-frame otherwise). KeyError names a missing member."""
    out, frame_types, picked = {}, None, None
    square = centre_square(*frame_size, mv_block)
    for name in modalities:
        ext = MEMBER_EXT[name]
        if ext not in members:
            raise KeyError(f"sample {key!r} has no {ext} member (members: {sorted(members)})")
        arrays = load_npz(members[ext])
        if name == "iframe":
            if len(arrays["iframe"]) != segments:
                raise ValueError(f"sample {key!r}: {len(arrays['iframe'])} I-frames stored, the loader asks for "
                                 f"{segments} segments (the manifest's compressed.segments)")
            out[name] = np.ascontiguousarray(_crop(arrays["iframe"].transpose(0, 3, 1, 2), *square))
            continue
        if picked is None:  # MV and residual of a sample share one frame per segment
            frame_types = arrays["frame_types"]
            picked = segment_frames(frame_types, segments, generator)
        chosen = arrays[name][picked]
        if name == "mv":
            out[name] = np.ascontiguousarray(_crop(chosen, *square, block=mv_block)).astype(np.float16)
        else:
            out[name] = np.ascontiguousarray(_crop(chosen.transpose(0, 3, 1, 2), *square)).astype(np.float16)
    return out
