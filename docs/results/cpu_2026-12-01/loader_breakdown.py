# Where a clip's time goes inside the torch loader (in process, cProfile, 24 batches of 8 after 2 warm-up batches).
# Run: PYTHONPATH=. python docs/results/cpu_2026-12-01/loader_breakdown.py  (reads the profiler's shards in /tmp/tp14)
import cProfile, pstats, sys
from pipeline.contract import AugmentSpec, ClipSpec
from pipeline.cpu_loader import train_loader
import torch; torch.set_num_threads(1)
shards = "/tmp/tp14/shards/h264_g8_s128_f25"
clip = ClipSpec(frames=16, stride=2, crop_size=112)
list(train_loader(shards, "labelled", clip, AugmentSpec(), batch_size=8, steps_per_epoch=2, num_workers=0))
prof = cProfile.Profile(); prof.enable()
loader = train_loader(shards, "labelled", clip, AugmentSpec(), batch_size=8, steps_per_epoch=24, num_workers=0)
n = sum(len(b["key"]) for b in loader)
prof.disable()
st = pstats.Stats(prof)
rows = {}
for (f, line, name), (cc, nc, tt, ct, callers) in st.stats.items():
    for want in ("decode_frames", "train_view", "load", "collate", "epoch_stream", "make_batch", "train_clip_indices", "_video_and_meta"):
        if name == want and ("pipeline" in f):
            rows[f"{f.split('/')[-1]}:{name}"] = ct
print("clips", n)
for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
    print(f"{k:40s} {1000*v/n:7.2f} ms/clip")
