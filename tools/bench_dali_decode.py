"""Where the DALI GPU loader spends its time: clips/s of pipeline.dali_loader's training loader for each
CPU thread count and batch size, next to its sample reader alone (tar reads + JSON parsing, no decoding),
with NVDEC and GPU utilisation (NVML). A decoder that keeps NVDEC busy scales with the batch; a fixed
cost per sample (decoder set-up) shows as clips/s that stay flat while NVDEC idles.

    python tools/bench_dali_decode.py                    # one GPU, < 2 min on an H200; H.264 shards made in a temp dir
    python tools/bench_dali_decode.py --shards shards/ucf101 --split labelled

Every configuration reads the same shards; each is timed over --clips clips after one warm-up batch
(pipeline build, first NVDEC session). Writes a table on stdout and <out>/bench_dali_decode.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from pipeline.contract import VIDEO, AugmentSpec, ClipSpec  # noqa: E402
from pipeline.dali_loader import dali_train_loader  # noqa: E402
from tools.gpu_check_dali import write_h264_shards  # noqa: E402
from tools.profile_throughput import NvmlSampler, int_list  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, help="existing H.264 shards (default: 128 videos written to a temp dir)")
    p.add_argument("--split", default="labelled", help="split to read. Default: labelled")
    p.add_argument("--video-frames", type=int, default=64, help="frames per generated video. Default: 64")
    p.add_argument("--short-side", type=int, default=128, help="generated video height. Default: 128")
    p.add_argument("--gop", type=int, default=8, help="keyframe interval of generated videos. Default: 8")
    p.add_argument("--threads", type=int_list, default=[4, 16], help="DALI CPU threads. Default: 4,16")
    p.add_argument("--batch-sizes", type=int_list, default=[8, 32], help="clips per batch. Default: 8,32")
    p.add_argument("--strong-view", action="store_true", help="also produce the students' strong view")
    p.add_argument("--clips", type=int, default=96, help="timed clips per configuration. Default: 96")
    p.add_argument("--frames", type=int, default=16, help="T. Default: 16")
    p.add_argument("--stride", type=int, default=2, help="frame stride. Default: 2")
    p.add_argument("--crop", type=int, default=112, help="output crop. Default: 112")
    p.add_argument("--out", type=Path, default=Path("runs/bench_dali_decode"), help="folder for the JSON")
    return p.parse_args(argv)


def time_reader(loader, batches: int) -> float:
    """Seconds per batch of the loader's sample reader alone (DALI webdataset reader + JSON parse)."""
    loader._build()
    loader._read()
    start = time.perf_counter()
    for _ in range(batches):
        loader._read()
    seconds = (time.perf_counter() - start) / batches
    loader.close()
    return seconds


def time_loader(shards: Path, args, clip: ClipSpec, threads: int, batch: int) -> dict:
    timed = max(2, args.clips // batch)
    loader = dali_train_loader(shards, args.split, clip, AugmentSpec(), batch_size=batch, steps_per_epoch=timed + 1,
                               device="gpu", strong_view=args.strong_view, num_threads=threads)
    stream = iter(loader)
    next(stream)  # build + first decode
    torch.cuda.synchronize()
    with NvmlSampler(0.02, torch.cuda.current_device()) as sampler:
        start = time.perf_counter()
        clips = sum(b[VIDEO].shape[0] for b in stream)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    loader.close()
    return {"threads": threads, "batch": batch, "clips": clips, "seconds": round(seconds, 3),
            "clips_per_s": round(clips / seconds, 1), "frames_per_s": round(clips * clip.frames / seconds), **sampler.summary()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_dali_decode.py needs a CUDA GPU (DALI's mixed video decoder)", file=sys.stderr)
        return 2
    clip = ClipSpec(frames=args.frames, stride=args.stride, crop_size=args.crop)
    with tempfile.TemporaryDirectory(prefix="bench_dali_decode_") as tmp:
        shards = args.shards or write_h264_shards(Path(tmp), samples=128, frames=args.video_frames,
                                                  short_side=args.short_side, gop=args.gop, samples_per_shard=64)
        reader = dali_train_loader(shards, args.split, clip, AugmentSpec(), batch_size=8, steps_per_epoch=1, device="gpu")
        reader_s = time_reader(reader, 20)
        print(f"sample reader alone: {1000 * reader_s:.1f} ms per batch of 8 ({8 / reader_s:.0f} samples/s)", flush=True)
        rows = []
        for threads, batch in itertools.product(args.threads, args.batch_sizes):
            row = time_loader(shards, args, clip, threads, batch)
            rows.append(row)
            nvdec = row["nvdec_util_pct"] or {}
            print(f"threads={threads:<3} batch={batch:<3} {row['clips_per_s']:>8.1f} clips/s "
                  f"{row['frames_per_s']:>7} frames/s  NVDEC mean {nvdec.get('mean')} max {nvdec.get('max')}  "
                  f"GPU mean {(row['gpu_util_pct'] or {}).get('mean')}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0), "clip": dataclasses.asdict(clip),
              "strong_view": args.strong_view, "reader_ms_per_batch_of_8": round(1000 * reader_s, 2), "rows": rows}
    (args.out / "bench_dali_decode.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out / 'bench_dali_decode.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
