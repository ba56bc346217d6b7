"""Export a model bundle (jedi_train/bundle.py) to a standalone torch.export program.

    python tools/export.py --bundle runs/<run>/bundles/ucf101/jedi_student --out exported/ucf101_jedi_student

Writes <out>/model.pt2 and <out>/export.json. The program takes uint8 clips [B, 3, T, S, S] (RGB, the
bundle's frames and crop size; any batch size) and returns logits [B, classes]: the normalisation is
inside, so a user needs neither this project nor its constants, only torch:

    program = torch.export.load("model.pt2").module()
    logits = program(clips_uint8)        # export.json names the classes, fps, short side and clip spec

Why torch.export (ExportedProgram, .pt2) and not ONNX: it needs no dependency beyond torch (the dynamo
ONNX exporter needs onnx and onnxscript, and running the result needs onnxruntime, none of them in this
project), it runs the same ATen kernels as the eager model, so the logits agree to float rounding, and
the .pt2 loads back into PyTorch for AOTInductor compilation or fine-tuning. Take ONNX when the target
runtime is not PyTorch (TensorRT, ONNX Runtime on a device); the same wrapper exports with
torch.onnx.export(..., dynamo=True).

After export the program is checked against the eager bundle on --check-clips random clips: the largest
absolute logit difference is printed, written to export.json, and above --tolerance the export fails.
Exit status: 0 exported and checked; 1 the check failed; 2 bad arguments or bundle.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/export.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from jedi_train.bundle import Bundle, BundleError, load_bundle  # noqa: E402
from pipeline.contract import to_model_input  # noqa: E402

PROGRAM = "model.pt2"
EXPORT_JSON = "export.json"
# float32, same kernels: measured differences are ~1e-6 (README, docs/benchmarks.md); 1e-4 leaves room for
# another CPU's vector width without hiding a wrong graph (a wrong one is off by whole logits).
DEFAULT_TOLERANCE = 1e-4


class UInt8Clips(nn.Module):
    """uint8 clips [B, 3, T, S, S] -> logits: the project's normalisation, then the bundle's model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(to_model_input(clips))


def example_clips(bundle: Bundle, batch: int, seed: int = 0) -> torch.Tensor:
    clip = bundle.clip
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, clip.frames, clip.crop_size, clip.crop_size), dtype=torch.uint8,
                         generator=generator)


def export_bundle(bundle: Bundle) -> torch.export.ExportedProgram:
    """The bundle's model behind UInt8Clips, batch dimension dynamic."""
    wrapper = UInt8Clips(bundle.model.cpu()).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        return torch.export.export(wrapper, (example_clips(bundle, 2),), dynamic_shapes=({0: batch},))


def max_logit_difference(program: nn.Module, eager: nn.Module, clips: torch.Tensor) -> float:
    with torch.no_grad():
        return float((program(clips) - eager(to_model_input(clips))).abs().max())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path,
                        help="model bundle folder (<run>/bundles/<dataset>/<model>, with bundle.json)")
    parser.add_argument("--out", required=True, type=Path, help="folder for model.pt2 and export.json")
    parser.add_argument("--check-clips", type=int, default=16,
                        help="random uint8 clips the exported program and the eager model both score (default 16)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest allowed absolute logit difference (default {DEFAULT_TOLERANCE:g})")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        bundle = load_bundle(args.bundle, "cpu")
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    program = export_bundle(bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(args.out / PROGRAM))
    seconds = time.perf_counter() - start
    reloaded = torch.export.load(str(args.out / PROGRAM)).module()
    difference = max_logit_difference(reloaded, bundle.model, example_clips(bundle, args.check_clips, seed=1))
    clip = bundle.clip
    meta = bundle.meta
    (args.out / EXPORT_JSON).write_text(json.dumps({
        "format": "torch.export ExportedProgram (torch.export.load(path).module())",
        "torch_version": torch.__version__,
        "input": {"dtype": "uint8", "shape": ["batch", 3, clip.frames, clip.crop_size, clip.crop_size],
                  "layout": "RGB, [B, 3, T, H, W]; normalisation is inside the program"},
        "output": {"shape": ["batch", len(bundle.classes)], "meaning": "logits; softmax for probabilities"},
        "classes": bundle.classes, "clip": meta["clip"], "video": meta["video"],
        "bundle": {"path": str(args.bundle), "model": meta["model"], "dataset": meta["dataset"],
                   "source": meta["source"]},
        "check": {"clips": args.check_clips, "max_abs_logit_difference": difference, "tolerance": args.tolerance},
    }, indent=2))
    print(f"exported {bundle.name} to {args.out / PROGRAM} in {seconds:.1f} s; max |logit difference| vs eager "
          f"on {args.check_clips} clips: {difference:.2e} (tolerance {args.tolerance:g})")
    if not difference <= args.tolerance:
        print(f"error: the exported program differs from the eager model by {difference:.2e} > {args.tolerance:g}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
