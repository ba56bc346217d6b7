"""One short device check of the DALI GPU data path (NVDEC via DALI's "mixed" video decoder).

Writes tiny H.264 shards (tests/shard_fixture.py, with DALI index files and a manifest, one sample
deliberately empty), then on the GPU: the training batch contract (weak + strong view) on cuda,
the evaluation contract, the corrupt sample skipped and counted, exact resume from a loader state,
and training clips/s. Exits non-zero on the first failed check.

    python tools/gpu_check_dali.py                      # 80 s on an H200 (2026-11-26), mostly encoding
    python tools/gpu_check_dali.py --steps 50 --batch-size 32
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from pipeline.contract import (KEY, LABEL, STRONG_VIDEO, VIDEO, AugmentSpec, ClipSpec,  # noqa: E402
                               to_model_input)
from pipeline.dali_loader import dali_eval_loader, dali_train_loader  # noqa: E402
from pipeline.video_encode import even_size  # noqa: E402
from tests.shard_fixture import FixtureSpec, write_shard_set  # noqa: E402

CLASSES = 4


def write_h264_shards(out: Path, *, samples: int, frames: int, short_side: int, gop: int,
                      samples_per_shard: int, empty_index: int | None = None) -> Path:
    """`labelled` and `val` (1/4 of it) H.264 shards of tests/shard_fixture.py under <out>/gpucheck, with a DALI
    index file next to each tar; labelled sample `empty_index` (if given) holds an empty video."""
    width, height = even_size(short_side * 4 / 3, short_side, short_side)
    corrupt = [] if empty_index is None else [("labelled", empty_index, "empty")]
    shard_dir = write_shard_set(out, FixtureSpec(
        dataset="gpucheck", splits={"labelled": samples, "unlabelled": 0, "val": samples // 4, "test": 0},
        samples_per_shard=samples_per_shard,
        num_classes=CLASSES, width=width, height=height, frames=(frames,), gop=gop, corrupt=corrupt,
        show_progress=True))
    return shard_dir


def check(condition: bool, what: str) -> None:
    print(f"[{'ok' if condition else 'FAIL'}] {what}", flush=True)
    if not condition:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where to write the shards (default: a temp dir)")
    parser.add_argument("--samples", type=int, default=64, help="samples in the labelled split (val gets 1/4)")
    parser.add_argument("--video-frames", type=int, default=48, help="frames per encoded video")
    parser.add_argument("--short-side", type=int, default=128, help="encoded frame height (width is 4/3 of it)")
    parser.add_argument("--gop", type=int, default=8, help="frames between keyframes")
    parser.add_argument("--frames", type=int, default=16, help="T: frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="frame stride within a clip")
    parser.add_argument("--crop", type=int, default=112, help="crop size of the output clips")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per batch")
    parser.add_argument("--steps", type=int, default=30, help="timed training batches (after 3 warm-up batches)")
    parser.add_argument("--num-threads", type=int, default=4, help="DALI CPU threads per pipeline")
    args = parser.parse_args()

    check(torch.cuda.is_available(), f"CUDA device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_dali_"))
    empty_index = 5
    shard_dir = write_h264_shards(out, samples=args.samples, frames=args.video_frames,
                                  short_side=args.short_side, gop=args.gop, samples_per_shard=16,
                                  empty_index=empty_index)
    clip = ClipSpec(frames=args.frames, stride=args.stride, crop_size=args.crop, test_clips=2, test_crops=3)
    shape = (args.batch_size, 3, args.frames, args.crop, args.crop)

    def train_loader(steps: int):
        return dali_train_loader(shard_dir, "labelled", clip, AugmentSpec(), batch_size=args.batch_size,
                                 steps_per_epoch=steps, device="gpu", strong_view=True, seed=0,
                                 num_threads=args.num_threads)

    loader = train_loader(3)
    batches = list(loader)
    batch = batches[0]
    check(batch[VIDEO].is_cuda and batch[VIDEO].dtype == torch.uint8 and tuple(batch[VIDEO].shape) == shape,
          f"train VIDEO uint8 {shape} on cuda (got {batch[VIDEO].dtype} {tuple(batch[VIDEO].shape)} {batch[VIDEO].device})")
    check(batch[STRONG_VIDEO].is_cuda and tuple(batch[STRONG_VIDEO].shape) == shape, "train STRONG_VIDEO on cuda")
    check(batch[LABEL].dtype == torch.int64 and len(batch[KEY]) == args.batch_size, "LABEL int64, KEY per sample")
    check(float(batch[VIDEO].float().std()) > 10, "decoded frames are not blank")
    model_input = to_model_input(batch[VIDEO])
    check(model_input.is_cuda and model_input.dtype == torch.float32, "to_model_input runs on the device")

    evaluation = list(dali_eval_loader(shard_dir, "val", clip, batch_size=8, multi_view=True, device="gpu",
                                       num_threads=args.num_threads))
    first = evaluation[0][VIDEO]
    check(first.is_cuda and tuple(first.shape[1:]) == (6, 3, args.frames, args.crop, args.crop),
          f"eval VIDEO [B, 6, 3, T, S, S] on cuda (got {tuple(first.shape)})")
    check(sum(len(b[KEY]) for b in evaluation) == args.samples // 4, "eval covers the val split once")

    # the empty sample (labelled index 5) sits in the first reader epoch: run one epoch's worth
    loader = train_loader(max(1, args.samples // args.batch_size) + 1)
    for _ in loader:
        pass
    check(len(loader.skipped_keys) >= 1, f"corrupt sample skipped and counted: {loader.skipped_keys[:3]}")

    loader = train_loader(2)
    list(loader)
    state = loader.state_dict()
    expected = [b[KEY] for b in loader]
    resumed = train_loader(2)
    resumed.load_state_dict(state)
    check([b[KEY] for b in resumed] == expected, "resume from state_dict gives the same batches")

    loader = train_loader(args.steps + 3)
    stream = iter(loader)
    for _ in range(3):
        next(stream)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in stream:
        batch[VIDEO].float().mean()  # touch the data, as a trainer would
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"train clips/s (T={args.frames}, stride {args.stride}, crop {args.crop}, batch {args.batch_size}, "
          f"weak+strong views, {args.short_side}p H.264 gop {args.gop}): "
          f"{args.steps * args.batch_size / seconds:.1f}", flush=True)
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
