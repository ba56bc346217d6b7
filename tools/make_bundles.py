"""Write the model bundles of a finished run (jedi_train/bundle.py): for a run trained before bundles were
written at the end of training, or to write them somewhere else.

    python tools/make_bundles.py --run runs/synthetic_demo_seed0 [--out /tmp/bundles]

Reads <run>/config.json, the shard manifests it names (classes, fps, short side), the experts and every
arm's best.pt. Relative shard paths are read from the current directory, as the trainer did.
Exit status: 0 written; 2 the run or its shards are missing or do not fit.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/make_bundles.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jedi_train.bundle import write_run_bundles  # noqa: E402
from jedi_train.config import ConfigError, build, RunConfig  # noqa: E402
from jedi_train.data import dataset_infos  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path,
                        help="run folder with config.json, experts/ and <arm>/best.pt (runs/<name>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write <dataset>/<model>/ bundles (default: <run>/bundles)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    config_path = args.run / "config.json"
    if not config_path.is_file():
        print(f"error: {config_path} does not exist; --run names a folder the trainer wrote", file=sys.stderr)
        return 2
    try:
        tree = json.loads(config_path.read_text())
        tree.update(output_dir=str(args.run.parent), name=args.run.name)  # the run may have moved
        config = build(RunConfig, tree)
        infos = dataset_infos(config)
        written = write_run_bundles(config, infos, args.out)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} bundles under {args.out or args.run / 'bundles'}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
