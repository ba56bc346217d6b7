"""PKD + WISE on one dataset and seed, end to end on CPU: the three modality nets (cross-entropy), the
internal classifiers trained with CE and with progressive KD, WISE fitted on training logits and swept
over thresholds on test. Writes <output_dir>/<dataset>_seed<N>/results.json (what docs/results.md's
compressed-domain block is made of; `python -m jedi_train.compressed.report`).

    python -m jedi_train.compressed.run --config configs/compressed_pkd.yaml \\
        shards=shards/compressed_seed0/ucf101 dataset=ucf101 seed=0

Resumable in coarse steps: a run folder with results.json is left alone (force=true reruns it), and
trained modality nets (nets.pt) are reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python jedi_train/compressed/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from jedi_train.compressed.config import CompressedConfig, ConfigError, help_keys, load_config
from jedi_train.compressed.data import eval_batches, flip_allowed, load_split
from jedi_train.compressed.exits import ExitHeads, all_exit_logits, exit_costs, exit_names
from jedi_train.compressed.nets import ORDER, build_net
from jedi_train.compressed.pkd import METHODS, train_exits
from jedi_train.compressed.supervised import top1, train_net
from jedi_train.compressed.wise import fit_wise, sweep
from pipeline.cpu_loader import read_manifest


def exit_logits_of(nets, heads, split, batch_size: int) -> torch.Tensor:
    return torch.cat([all_exit_logits(nets, heads, inputs) for inputs, _ in eval_batches(split, batch_size)], dim=1)


def accuracy_per_exit(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [100.0 * (exit_logits.argmax(1) == labels).double().mean().item() for exit_logits in logits]


def run(config: CompressedConfig) -> dict:
    run_dir = config.run_dir
    results_path = run_dir / "results.json"
    if results_path.is_file() and not config.force:
        print(f"{results_path} exists: kept (force=true reruns it)")
        return json.loads(results_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    log_file = (run_dir / "train.log").open("a")

    def log(line: str) -> None:
        log_file.write(line + "\n")
        log_file.flush()

    manifest = read_manifest(config.shards)
    num_classes, flip = len(manifest["classes"]), flip_allowed(config.shards)
    splits = {name: load_split(config.shards, name, config.eval_batch_size) for name in ("labelled", "val", "test")}
    train, test = splits["labelled"], splits["test"]
    print(f"{config.dataset} seed {config.seed}: {len(train)} train / {len(splits['val'])} val / {len(test)} test clips, "
          f"{num_classes} classes, hflip {'on' if flip else 'off'} ({time.perf_counter() - started:.0f} s to read)")

    torch.manual_seed(config.seed)
    net_configs = {modality: getattr(config, modality) for modality in ORDER}
    nets = {modality: build_net(modality, num_classes, c.widths, c.strides, c.dropout)
            for modality, c in net_configs.items()}
    nets_path = run_dir / "nets.pt"
    if nets_path.is_file():
        for modality, state in torch.load(nets_path, weights_only=True).items():
            nets[modality].load_state_dict(state)
            nets[modality].eval()  # BN in train mode would move its running statistics during evaluation
        print(f"modality nets loaded from {nets_path}")
    else:
        for modality, net in nets.items():
            c = net_configs[modality]
            train_net(net, modality, train, epochs=c.epochs, batch_size=config.batch_size, lr=c.lr,
                      weight_decay=c.weight_decay, seed=config.seed, flip=flip, log=log)
        torch.save({modality: net.state_dict() for modality, net in nets.items()}, nets_path)
    net_top1 = {modality: {split: top1(lambda x, m=modality: nets[m](x[m]), splits[split], config.eval_batch_size)
                           for split in ("val", "test")} for modality in ORDER}
    print("modality nets, test top-1: " + ", ".join(f"{m} {net_top1[m]['test']:.1f}" for m in ORDER))

    results = {"dataset": config.dataset, "seed": config.seed, "shards": config.shards, "exits": exit_names(),
               "config": dataclasses.asdict(config), "nets": net_top1, "methods": {}}
    one_clip = {name: tensor[:1] for name, tensor in next(eval_batches(test, 1))[0].items()}
    for method in METHODS:
        torch.manual_seed(config.seed)  # the same initial exits for ce and pkd
        heads = ExitHeads(nets, num_classes, config.exits.width)
        history = train_exits(method, nets, heads, train, epochs=config.exits.epochs, batch_size=config.batch_size,
                              lr=config.exits.lr, weight_decay=config.exits.weight_decay,
                              temperature=config.exits.temperature, seed=config.seed, flip=flip, log=log)
        torch.save(heads.state_dict(), run_dir / f"exits_{method}.pt")
        if "costs" not in results:
            results["costs"] = exit_costs(nets, heads, one_clip)
        train_logits = exit_logits_of(nets, heads, train, config.eval_batch_size)
        test_logits = exit_logits_of(nets, heads, test, config.eval_batch_size)
        val_logits = exit_logits_of(nets, heads, splits["val"], config.eval_batch_size)
        weights = fit_wise(train_logits, train.labels, l1=config.wise.l1, steps=config.wise.steps, lr=config.wise.lr)
        thresholds = [float(t) for t in config.wise.thresholds.split(",")]
        results["methods"][method] = {
            "test_top1": accuracy_per_exit(test_logits, test.labels),
            "val_top1": accuracy_per_exit(val_logits, splits["val"].labels),
            "final_loss": history[-1]["loss"],
            "wise_weights": [w.tolist() for w in weights],
            "wise": sweep(test_logits, test.labels, weights, results["costs"]["walk"], thresholds)}
        accuracy = results["methods"][method]["test_top1"]
        print(f"exits ({method}), test top-1: " + ", ".join(f"{n} {a:.1f}" for n, a in zip(exit_names(), accuracy)))
    results["seconds"] = time.perf_counter() - started
    results_path.write_text(json.dumps(results, indent=1))
    print(f"{config.dataset} seed {config.seed}: done in {results['seconds']:.0f} s -> {results_path}")
    log_file.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settable keys (key=value, dotted for sections):\n" + help_keys())
    parser.add_argument("--config", type=Path, help="YAML file of settings (e.g. configs/compressed_pkd.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 exits.epochs=6")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
