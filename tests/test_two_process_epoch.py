"""Two real processes over shards of unequal size: the same number of steps each, and every sample of
the epoch seen once across the two (plus the documented padding: a rank short of samples starts another
pass over its own share)."""
import json
import subprocess
import sys
import tarfile
from collections import Counter

from conftest import ROOT
from shard_fixture import FixtureSpec, write_shard_set

RANK_SCRIPT = """
import json, sys
from pipeline.contract import AugmentSpec, ClipSpec
from pipeline.cpu_loader import steps_to_cover, train_loader
shard_dir, rank = sys.argv[1], int(sys.argv[2])
steps = steps_to_cover(shard_dir, "labelled", batch_size=4, world_size=2)
loader = train_loader(shard_dir, "labelled", ClipSpec(frames=4, stride=2, crop_size=24), AugmentSpec(),
                      batch_size=4, steps_per_epoch=steps, rank=rank, world_size=2, num_workers=1, seed=3, epoch=0)
print(json.dumps({"steps": steps, "keys": [k for batch in loader for k in batch["key"]]}))
"""


def test_two_processes_over_unequal_shards_see_each_sample_once(tmp_path):
    # 4 shards of 5, 5, 5 and 2 samples: split by shard, so one rank holds 10 samples and the other 7
    shard_dir = write_shard_set(tmp_path, FixtureSpec(splits={"labelled": 17}, samples_per_shard=5, frames=(12,)))
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    all_keys = set()
    for shard in manifest["splits"]["labelled"]["shards"]:
        with tarfile.open(shard_dir / shard["file"]) as tar:
            all_keys |= {m.name.rsplit(".", 1)[0] for m in tar.getmembers()}
    processes = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(shard_dir), str(rank)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    steps = {r["steps"] for r in results}
    assert len(steps) == 1  # both ranks take the same number of steps: no hang on uneven shards
    assert all(len(r["keys"]) == 4 * r["steps"] for r in results)
    per_rank = [Counter(r["keys"]) for r in results]
    assert not set(per_rank[0]) & set(per_rank[1]), "a sample was read by both ranks"
    assert set(per_rank[0]) | set(per_rank[1]) == all_keys, "a sample of the epoch was never read"
    for counts in per_rank:
        # within a rank, repeats only come from padding: no sample twice before every own sample once
        assert max(counts.values()) - min(counts.values()) <= 1
