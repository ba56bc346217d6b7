"""Where DALI's video decoding loses its time: DALI's video decoder with nothing of ours around it, next
to our DALI loader and DALI's file reader, on the same videos, the same device and the same threads.

Rows (each: clips/s, ms per sample, process CPU % summed over threads and per thread name, NVDEC and
GPU utilisation):
  decode_all   fn.decoders.video on whole videos of L frames (no frame list). Over several L, a least-squares
               line ms per sample = fixed + per_frame * L separates a per-sample set-up cost from decoding.
  decode_clip  fn.decoders.video with the loader's frame list (T frames at stride s, random start), fed
               the very bytes stored in the shards: the decoder alone, as the loader calls it.
  loader       pipeline.dali_loader.dali_train_loader on those shards: reader + decode + crop/flip +
               our Python join. loader / decode_clip is what our code costs around the decoder.
  reader       fn.experimental.readers.video on the same videos as files (DALI reads and decodes;
               GPU and CPU), and on a GPU also the legacy fn.readers.video, which keeps one NVDEC
               decoder across samples and decodes one sequence at a time.
  processes    decode_clip in P processes at once (one pipeline each, same GPU): total clips/s. If P
               processes deliver P times one process, what serialises the decoder is inside a process
               (a lock, the CUDA context); if not, it is the device, the driver or the VM.

How to read it: if decode_clip is as slow as the loader, the cost is DALI's (or the driver's), not
ours. If decode_all's fixed cost dominates and stays flat over threads while one thread name holds
~100 % CPU, that thread does per-sample work serially; a low CPU % with low NVDEC means the threads
wait on something (a lock, a stream synchronisation, the driver or the VM).

    python tools/diagnose_dali_video.py                   # GPU (H.264); not yet run there: estimated 4 min
                                                          # (gpu_checks.sh runs it with --max-seconds 8)
    python tools/diagnose_dali_video.py --device cpu      # DALI's CPU decoder on VP9, same rows (no legacy reader)

Writes a table on stdout and <out>/diagnose_dali_video.json.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import queue
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from pipeline.clips import train_clip_indices  # noqa: E402
from pipeline.contract import VIDEO, AugmentSpec, ClipSpec  # noqa: E402
from pipeline.dali_loader import dali_train_loader  # noqa: E402
from pipeline.video_encode import EncodeSettings, encode_video_bytes, even_size  # noqa: E402
from tests.shard_fixture import FixtureSpec, synthetic_frames, write_shard_set  # noqa: E402
from tools.profile_throughput import NvmlSampler, extract_members, int_list  # noqa: E402

CODEC = {"gpu": "h264", "cpu": "vp9"}  # DALI's CPU decoder reads no H.264


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                   help="gpu: H.264 and DALI's mixed decoder (NVDEC); cpu: VP9 and DALI's CPU decoder. Default: gpu")
    p.add_argument("--lengths", type=int_list, default=[16, 64, 256],
                   help="video lengths (frames) of the decode_all rows. Default: 16,64,256")
    p.add_argument("--video-frames", type=int, default=64, help="frames per video in the shards. Default: 64")
    p.add_argument("--videos", type=int, default=32, help="videos in the shards (and per decode_all length). Default: 32")
    p.add_argument("--short-side", type=int, default=128, help="frame height; width is 4/3 of it. Default: 128")
    p.add_argument("--gop", type=int, default=8, help="keyframe interval. Default: 8")
    p.add_argument("--threads", type=int_list, default=[1, 16], help="DALI CPU threads. Default: 1,16")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 16], help="samples per batch. Default: 1,16")
    p.add_argument("--frames", type=int, default=16, help="T of the clip. Default: 16")
    p.add_argument("--stride", type=int, default=2, help="frame stride of the clip. Default: 2")
    p.add_argument("--crop", type=int, default=112, help="loader's output crop. Default: 112")
    p.add_argument("--processes", type=int_list, default=[1, 4],
                   help="process counts of the processes rows (largest batch size, the largest thread count "
                        "split among the processes). Default: 1,4")
    p.add_argument("--batches", type=int, default=4, help="timed batches per row (after one warm-up). Default: 4")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help="a row stops after this many timed seconds even before --batches. Default: 15")
    p.add_argument("--out", type=Path, default=Path("runs/diagnose_dali_video"), help="folder for the JSON")
    return p.parse_args(argv)


# ---------------------------------------------------------------- timing
def thread_cpu_seconds() -> dict[str, tuple[float, int]]:
    """CPU seconds used so far by this process's threads and their count, per thread name (Linux /proc;
    DALI names its workers, e.g. "[DALI][WT]Video", truncated by the kernel to 15 characters)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, tuple[float, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()  # fields from 3 (state) on
        except OSError:  # the thread ended
            continue
        seconds, count = used.get(name, (0.0, 0))
        used[name] = (seconds + (int(fields[11]) + int(fields[12])) / ticks, count + 1)  # utime + stime
    return used


def busiest_threads(before: dict, after: dict, seconds: float, top: int = 4) -> list[dict]:
    rows = [{"name": name, "threads": count, "cpu_pct": round(100 * (used - before.get(name, (0.0, 0))[0]) / seconds)}
            for name, (used, count) in after.items()]
    return sorted(rows, key=lambda r: -r["cpu_pct"])[:top]


def measure(run_batch: Callable[[], int], *, batches: int, max_seconds: float, on_gpu: bool) -> dict:
    """Time `run_batch` (returns the samples it produced) after one warm-up call."""
    run_batch()
    if on_gpu:
        torch.cuda.synchronize()
    sampler = NvmlSampler(0.02, torch.cuda.current_device()) if on_gpu else contextlib.nullcontext()
    samples, done = 0, 0
    with sampler:
        threads0, cpu0, start = thread_cpu_seconds(), time.process_time(), time.perf_counter()
        while done < batches and time.perf_counter() - start < max_seconds:
            samples += run_batch()
            done += 1
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        threads = busiest_threads(threads0, thread_cpu_seconds(), seconds)
    row = {"batches": done, "samples": samples, "seconds": round(seconds, 3),
           "clips_per_s": round(samples / seconds, 1), "ms_per_sample": round(1000 * seconds / samples, 2),
           "cpu_pct": round(100 * cpu / seconds), "busiest_threads": threads}
    if on_gpu:
        row.update(sampler.summary())
    return row


def raw_decoder(device: str, batch: int, threads: int, frame_list: bool):
    """external_source(video bytes [, frame indices]) -> fn.decoders.video, nothing else."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(prefetch_queue_depth=1)
    def graph():
        video = fn.external_source(name="video", dtype=types.UINT8, ndim=1)
        kwargs = {"frames": fn.external_source(name="frames", dtype=types.INT32, ndim=1)} if frame_list else {}
        return fn.decoders.video(video, device="mixed" if device == "gpu" else "cpu", pad_mode="edge", **kwargs)

    pipe = graph(batch_size=batch, num_threads=threads, device_id=torch.cuda.current_device() if device == "gpu" else None)
    pipe.build()
    return pipe


def feeder(pipe, inputs: dict[str, list[np.ndarray]], batch: int, expect: Callable[[tuple], bool]):
    """A run_batch for `measure`: feeds the next `batch` items of every input (cycling) and runs."""
    position = itertools.count()

    def run_batch() -> int:
        first = next(position) * batch
        for name, items in inputs.items():
            pipe.feed_input(name, [items[(first + i) % len(items)] for i in range(batch)])
        out = pipe.run()[0]  # a file reader without labels still may return more outputs
        shape = tuple(out.as_tensor().shape()) if hasattr(out, "as_tensor") else None
        if shape is not None and not expect(shape):
            raise RuntimeError(f"decoder output shape {shape} is not what was asked for")
        return batch

    return run_batch


# ---------------------------------------------------------------- the videos
def encode_lengths(lengths: list[int], count: int, codec: str, height: int, width: int, gop: int) -> dict[int, list]:
    rng = np.random.default_rng(0)
    settings = EncodeSettings(codec=codec, gop=gop, bframes=0)
    return {length: [np.frombuffer(encode_video_bytes(synthetic_frames(length, height, width, i % 6, rng), settings),
                                   np.uint8) for i in range(count)] for length in lengths}


def write_shards(root: Path, args, codec: str, height: int, width: int) -> Path:
    shard_dir = write_shard_set(root, FixtureSpec(
        dataset="diagnose", splits={"labelled": args.videos, "unlabelled": 0, "val": 0, "test": 0},
        samples_per_shard=max(1, args.videos // 2), num_classes=6, width=width, height=height, frames=(args.video_frames,), gop=args.gop, codec=codec))
    return shard_dir


def _decode_clip_process(device: str, batch: int, threads: int, videos: list, frame_lists: list, frames: int,
                         batches: int, max_seconds: float, ready, go, results) -> None:
    """One of the processes rows' workers: build, warm up, wait for the others, time, report."""
    pipe = raw_decoder(device, batch, threads, frame_list=True)
    run_batch = feeder(pipe, {"video": videos, "frames": frame_lists}, batch, lambda s: s[1] == frames)
    run_batch()
    ready.put(os.getpid())
    go.wait()
    began, samples, done = time.perf_counter(), 0, 0
    while done < batches and time.perf_counter() - began < max_seconds:
        samples += run_batch()
        done += 1
    if device == "gpu":
        torch.cuda.synchronize()
    results.put((samples, done, time.perf_counter() - began))


def _gather(messages, workers: list, timeout: float) -> list:
    """One message from every worker; RuntimeError as soon as a worker has died, or after `timeout` s."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < len(workers):
        try:
            got.append(messages.get(timeout=1))
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers) or time.monotonic() > deadline:
                raise RuntimeError(f"worker exit codes {[w.exitcode for w in workers]}") from None
    return got


def measure_processes(processes: int, device: str, batch: int, threads: int, videos: list, frame_lists: list,
                      frames: int, *, batches: int, max_seconds: float, on_gpu: bool) -> dict:
    """decode_clip in `processes` spawned processes that start timing together; clips/s of all of them.
    A worker that fails makes the row {"error": ...} instead of stopping the run."""
    spawn = multiprocessing.get_context("spawn")
    ready, go, results = spawn.Queue(), spawn.Event(), spawn.Queue()
    workers = [spawn.Process(target=_decode_clip_process, args=(device, batch, threads, videos, frame_lists, frames,
                                                                 batches, max_seconds, ready, go, results))
               for _ in range(processes)]
    children_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for worker in workers:
        worker.start()
    sampler = NvmlSampler(0.02, torch.cuda.current_device()) if on_gpu else contextlib.nullcontext()
    try:
        _gather(ready, workers, timeout=180)  # every worker has built its pipeline and decoded one batch
        go.set()
        with sampler:
            reports = _gather(results, workers, timeout=max_seconds + 180)
    except RuntimeError as error:
        for worker in workers:
            worker.terminate()
        return {"error": str(error)}
    for worker in workers:
        worker.join()
    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (children_cpu.ru_utime + children_cpu.ru_stime) - (children_cpu0.ru_utime + children_cpu0.ru_stime)
    samples, seconds = sum(r[0] for r in reports), max(r[2] for r in reports)
    row = {"batches": sum(r[1] for r in reports), "samples": samples, "seconds": round(seconds, 3),
           "clips_per_s": round(samples / seconds, 1), "ms_per_sample": round(1000 * seconds / samples, 2),
           "cpu_pct_children_whole_life": round(100 * cpu / seconds), "cpu_pct": None, "busiest_threads": []}
    if on_gpu:
        row.update(sampler.summary())
    return row


def clip_frame_lists(num_videos: int, video_frames: int, clip: ClipSpec, seed: int = 0) -> list[np.ndarray]:
    """One training clip's frame indices per video, drawn as the loader draws them (pipeline.clips)."""
    generator = torch.Generator().manual_seed(seed)
    return [np.array(train_clip_indices(video_frames, clip, generator), np.int32) for _ in range(num_videos)]


def file_reader(kind: str, device: str, files: list[str], clip: ClipSpec, batch: int, threads: int):
    from nvidia.dali import fn, pipeline_def

    reader = fn.readers.video if kind == "legacy" else fn.experimental.readers.video

    @pipeline_def(prefetch_queue_depth=1)
    def graph():
        return reader(device=device, filenames=files, sequence_length=clip.frames, stride=clip.stride,
                      step=clip.frames * clip.stride, random_shuffle=True, initial_fill=len(files), name="reader")

    pipe = graph(batch_size=batch, num_threads=threads, device_id=torch.cuda.current_device() if device == "gpu" else None)
    pipe.build()
    return pipe


# ---------------------------------------------------------------- main
def fit_fixed_cost(rows: list[dict]) -> dict:
    """ms per sample = fixed + per_frame * L (least squares over the decode_all lengths)."""
    lengths = np.array([r["video_frames"] for r in rows], float)
    ms = np.array([r["ms_per_sample"] for r in rows], float)
    per_frame, fixed = np.polyfit(lengths, ms, 1)
    return {"fixed_ms_per_sample": round(float(fixed), 2), "ms_per_frame": round(float(per_frame), 3)}


def main(argv=None) -> int:
    args = parse_args(argv)
    on_gpu = args.device == "gpu"
    if on_gpu and not torch.cuda.is_available():
        print("--device gpu needs a CUDA GPU (DALI's mixed video decoder); use --device cpu here", file=sys.stderr)
        return 2
    codec = CODEC[args.device]
    clip = ClipSpec(frames=args.frames, stride=args.stride, crop_size=args.crop)
    width, height = even_size(args.short_side * 4 / 3, args.short_side, args.short_side)
    timing = {"batches": args.batches, "max_seconds": args.max_seconds, "on_gpu": on_gpu}
    rows: list[dict] = []
    fits: list[dict] = []
    result = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "backend": args.device, "codec": codec,
              "size": [width, height], "gop": args.gop, "clip": {"frames": clip.frames, "stride": clip.stride},
              "rows": rows, "decode_all_fits": fits}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "diagnose_dali_video.json"

    def report(row: dict) -> None:  # print the row and rewrite the JSON, so a killed run keeps its rows
        rows.append(row)
        json_path.write_text(json.dumps(result, indent=2, default=str))
        nvdec = (row.get("nvdec_util_pct") or {}).get("mean")
        gpu = (row.get("gpu_util_pct") or {}).get("mean")
        cpu = "-" if row["cpu_pct"] is None else row["cpu_pct"]  # processes rows: only whole-life CPU is known
        print(f"{row['row']:<12} {row['what']:<44} threads={row['threads']:<3} batch={row['batch']:<3} "
              f"{row['clips_per_s']:>8.1f} clips/s {row['ms_per_sample']:>8.2f} ms/sample  CPU {cpu:>4} %"
              + (f"  NVDEC {nvdec} %  GPU {gpu} %" if on_gpu else "")
              + "  | " + ", ".join(f"{t['name']} x{t['threads']} {t['cpu_pct']} %" for t in row["busiest_threads"][:3]),
              flush=True)

    with tempfile.TemporaryDirectory(prefix="diagnose_dali_") as tmp:
        print(f"encoding {args.videos} {codec} videos per length {args.lengths} and {args.videos} shard videos "
              f"({width}x{height}, keyframe every {args.gop})", flush=True)
        by_length = encode_lengths(args.lengths, args.videos, codec, height, width, args.gop)
        shard_dir = write_shards(Path(tmp), args, codec, height, width)
        # the shards' video members as files (for the readers) and as bytes (for the decoder rows)
        files = [path for path, _ in extract_members(shard_dir, Path(tmp) / "files")[0]]
        videos = [np.fromfile(path, np.uint8) for path in files]
        frame_lists = clip_frame_lists(len(videos), args.video_frames, clip)

        # the most parallel combination first, then the processes rows: the most telling rows come
        # before a time limit can cut the run short (the JSON keeps every finished row)
        combos = sorted(itertools.product(args.threads, args.batch_sizes), key=lambda tb: -tb[0] * tb[1])
        for index, (threads, batch) in enumerate(combos):
            for length in args.lengths:
                pipe = raw_decoder(args.device, batch, threads, frame_list=False)
                row = measure(feeder(pipe, {"video": by_length[length]}, batch, lambda s, n=length: s[1] == n), **timing)
                report({"row": "decode_all", "what": f"fn.decoders.video, whole {length}-frame videos",
                        "threads": threads, "batch": batch, "video_frames": length, **row})
                del pipe
            pipe = raw_decoder(args.device, batch, threads, frame_list=True)
            row = measure(feeder(pipe, {"video": videos, "frames": frame_lists}, batch, lambda s: s[1] == clip.frames),
                          **timing)
            report({"row": "decode_clip", "what": f"fn.decoders.video, {clip.frames}-frame clip list",
                    "threads": threads, "batch": batch, **row})
            del pipe

            loader = dali_train_loader(shard_dir, "labelled", clip, AugmentSpec(), batch_size=batch,
                                       steps_per_epoch=10 ** 6, device=args.device, num_threads=threads)
            stream = iter(loader)
            row = measure(lambda batches=stream: next(batches)[VIDEO].shape[0], **timing)
            loader.close()
            report({"row": "loader", "what": "our dali_train_loader (decode + crop/flip + join)",
                    "threads": threads, "batch": batch, **row})

            for kind in ("experimental", "legacy") if on_gpu else ("experimental",):
                pipe = file_reader(kind, args.device, files, clip, batch, threads)
                row = measure(feeder(pipe, {}, batch, lambda s: s[1] == clip.frames), **timing)
                report({"row": "reader", "what": f"fn.{'readers' if kind == 'legacy' else 'experimental.readers'}"
                        f".video, {clip.frames}-frame sequences", "threads": threads, "batch": batch, **row})
                del pipe

            if index == 0:
                for processes in args.processes:
                    each = max(1, threads // processes)
                    row = measure_processes(processes, args.device, batch, each, videos, frame_lists, clip.frames,
                                            **timing)
                    if "error" in row:
                        print(f"processes row with {processes} processes failed: {row['error']}", flush=True)
                        result.setdefault("failed", []).append({"processes": processes, **row})
                        continue
                    report({"row": "processes", "what": f"decode_clip in {processes} processes at once",
                            "threads": each, "batch": batch, "processes": processes, **row})

    for threads, batch in itertools.product(args.threads, args.batch_sizes):
        same = [r for r in rows if r["row"] == "decode_all" and r["threads"] == threads and r["batch"] == batch]
        if len(same) >= 2:
            fits.append({"threads": threads, "batch": batch, **fit_fixed_cost(same)})
            print(f"decode_all fit threads={threads} batch={batch}: {fits[-1]['fixed_ms_per_sample']} ms fixed per "
                  f"sample + {fits[-1]['ms_per_frame']} ms per frame")
    json_path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
