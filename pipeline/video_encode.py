"""Write frames to a video file or to bytes with PyAV (which bundles FFmpeg, libx264 and libvpx).

Used by the synthetic data generator (raw MPEG-4 / H.264 / VP9 files in the official layouts), by the
shard writer (re-encoding for training) and by tests that need small real videos.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable

import av
import numpy as np

# codec -> (PyAV encoder, default container)
CODECS = {
    "h264": ("libx264", "mp4"),
    "mpeg4": ("mpeg4", "avi"),
    "vp9": ("libvpx-vp9", "webm"),
}


@dataclass(frozen=True)
class EncodeSettings:
    """How a video is encoded. `gop` = frames between keyframes; `bframes` = 0 keeps decode order
    equal to display order, which is what clip-seeking loaders (and NVDEC readers) want."""

    codec: str = "h264"
    fps: float = 25.0
    gop: int = 8
    bframes: int = 0
    crf: int = 23
    preset: str = "veryfast"
    container: str | None = None  # default: the codec's usual container

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"codec={self.codec!r}: allowed values are {sorted(CODECS)}")

    @property
    def container_format(self) -> str:
        return self.container or CODECS[self.codec][1]


def _encoder_options(settings: EncodeSettings) -> dict[str, str]:
    if settings.codec == "h264":
        return {
            "crf": str(settings.crf),
            "preset": settings.preset,
            "bf": str(settings.bframes),
            "g": str(settings.gop),
            "keyint_min": str(settings.gop),
            "sc_threshold": "0",  # keyframes exactly every `gop` frames, never extra ones
            "x264-params": "log-level=error",
        }
    if settings.codec == "vp9":
        return {
            "crf": str(min(63, settings.crf + 10)),
            "b": "0",
            "deadline": "realtime",
            "cpu-used": "8",
            "g": str(settings.gop),
            "lag-in-frames": "0",  # no alt-ref frames: every frame decodes in display order
            "auto-alt-ref": "0",
            "row-mt": "1",
        }
    return {"qscale": "4", "g": str(settings.gop), "bf": str(settings.bframes)}


def encode_video(frames: np.ndarray | Iterable[np.ndarray], dst: str | Path | BinaryIO,
                 settings: EncodeSettings) -> int:
    """Encode RGB uint8 frames ([T, H, W, 3] array or an iterable of [H, W, 3]) to `dst`.

    Width and height must be even (yuv420p). Returns the number of frames written.
    """
    fps = Fraction(settings.fps).limit_denominator(1001)
    encoder, _ = CODECS[settings.codec]
    if isinstance(dst, (str, Path)):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        dst = str(dst)
    written = 0
    with av.open(dst, mode="w", format=settings.container_format) as container:
        stream = None
        for frame in frames:
            if stream is None:
                height, width = frame.shape[:2]
                if height % 2 or width % 2:
                    raise ValueError(f"frame size {width}x{height}: yuv420p needs even width and height")
                stream = container.add_stream(encoder, rate=fps, options=_encoder_options(settings))
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                if settings.codec == "mpeg4":
                    stream.codec_context.time_base = 1 / fps
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            written += 1
        if stream is None:
            raise ValueError("encode_video got no frames")
        for packet in stream.encode():
            container.mux(packet)
    return written


def encode_video_bytes(frames: np.ndarray | Iterable[np.ndarray], settings: EncodeSettings) -> bytes:
    """Encode to an in-memory file (what the shard writer stores as `<key>.mp4` / `<key>.webm`)."""
    buffer = io.BytesIO()
    encode_video(frames, buffer, settings)
    return buffer.getvalue()


def even_size(width: float, height: float, short_side: int) -> tuple[int, int]:
    """Width and height scaled so the short side is `short_side`, both rounded to even numbers."""
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
