"""Training the internal classifiers of the frozen modality nets, two ways (METHOD.md section 2):

- `ce`: plain cross-entropy on the labels (the baseline);
- `pkd`: progressive knowledge distillation: soft cross-entropy (temperature T, no hard-label term)
  toward a teacher that changes by epoch: the motion-vector net for the first third of the epochs,
  then the residual net, then the I-frame net (`teacher_for_epoch`).

The backbones and final classifiers stay frozen (eval mode, no gradient); only the exits learn. Their
outputs (stage features, teacher logits) are computed once per clip and mirror (`frozen_outputs`).
Both ways see the same batches in the same order for a given seed, so their exits pair up per seed.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from jedi_train.compressed.data import ModalitySplit, hflip, normalise
from jedi_train.compressed.exits import EXIT_STAGES, ExitHeads
from jedi_train.compressed.nets import ORDER, ModalityNet

METHODS = ("ce", "pkd")


def teacher_for_epoch(epoch: int, epochs: int) -> str:
    """The PKD teacher of `epoch` (0-based): mv, then residual, then iframe, in equal thirds of `epochs`."""
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch={epoch}: must be in [0, epochs={epochs})")
    return ORDER[min(len(ORDER) * epoch // epochs, len(ORDER) - 1)]


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """-sum_c softmax(teacher / T)_c log softmax(student / T)_c, mean over clips."""
    targets = F.softmax(teacher_logits / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=1)).sum(1).mean()


def freeze(nets: dict[str, ModalityNet]) -> None:
    for net in nets.values():
        net.eval()
        net.requires_grad_(False)


def exit_loss(method: str, exit_logits: dict[str, list[torch.Tensor]], labels: torch.Tensor,
              teacher_logits: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Sum over the 9 exits of CE (method ce) or of soft CE toward `teacher_logits` (method pkd)."""
    losses = []
    for modality in ORDER:
        for logits in exit_logits[modality]:
            if method == "ce":
                losses.append(F.cross_entropy(logits, labels))
            else:
                losses.append(soft_cross_entropy(logits, teacher_logits, temperature))
    return torch.stack(losses).sum()


@torch.no_grad()
def frozen_outputs(nets: dict[str, ModalityNet], split: ModalitySplit, batch_size: int,
                   flip: bool) -> dict[bool, dict[str, list[torch.Tensor]]]:
    """What the frozen nets give each clip, computed once: {mirrored: {modality: [stage-1, stage-2,
    stage-3 features [N, K, C, H, W], final logits [N, classes]]}}, for the clips as they are and
    (when `flip`) mirrored. Exit training then never runs a backbone again."""
    outputs = {}
    for mirrored in ((False, True) if flip else (False,)):
        parts: dict[str, list[list[torch.Tensor]]] = {m: [[], [], [], []] for m in ORDER}
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(start + batch_size, len(split)))
            inputs = split.subset(index)
            if mirrored:
                inputs = hflip(inputs, torch.ones(len(index), dtype=torch.bool))
            inputs = normalise(inputs)
            for modality in ORDER:
                net, segments = nets[modality], inputs[modality].shape[1]
                features = net.stage_features(inputs[modality])
                for slot, stage in enumerate(EXIT_STAGES):
                    parts[modality][slot].append(features[stage - 1].unflatten(0, (-1, segments)))
                parts[modality][3].append(net.segment_mean(net.classifier(features[-1]), segments))
        outputs[mirrored] = {m: [torch.cat(chunks) for chunks in parts[m]] for m in ORDER}
    return outputs


def _pick(outputs: dict[bool, dict[str, list[torch.Tensor]]], index: torch.Tensor, mirrored: torch.Tensor,
          modality: str, slot: int) -> torch.Tensor:
    plain = outputs[False][modality][slot][index]
    if True not in outputs:
        return plain
    flipped = outputs[True][modality][slot][index]
    return torch.where(mirrored.view(-1, *[1] * (plain.dim() - 1)), flipped, plain)


def train_exits(method: str, nets: dict[str, ModalityNet], heads: ExitHeads, train: ModalitySplit, *, epochs: int,
                batch_size: int, lr: float, weight_decay: float, temperature: float, seed: int, flip: bool,
                log=print) -> list[dict]:
    """Train `heads` in place; returns one record per epoch (loss, teacher, clips/s). Each epoch is a
    seeded permutation with a random mirror per clip (when `flip`), as the nets were trained."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: allowed values are {METHODS}")
    freeze(nets)
    outputs = frozen_outputs(nets, train, 4 * batch_size, flip)
    segments = next(iter(train.inputs.values())).shape[1]
    heads.train()
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)  # same batches and mirrors for ce and pkd
    history = []
    bar = tqdm(range(epochs), desc=f"exits ({method})", unit="epoch", leave=False)
    for epoch in bar:
        teacher = teacher_for_epoch(epoch, epochs) if method == "pkd" else None
        started, total, clips = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            mirrored = torch.rand(len(index), generator=generator) < 0.5
            labels = train.labels[index]
            features = {m: [_pick(outputs, index, mirrored, m, slot).flatten(0, 1) for slot in range(len(EXIT_STAGES))]
                        for m in ORDER}
            teacher_logits = _pick(outputs, index, mirrored, teacher, 3) if teacher else None
            loss = exit_loss(method, heads(features, segments), labels, teacher_logits, temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(labels)
            clips += len(labels)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "loss": total / clips, "teacher": teacher, "clips_per_s": clips / seconds,
                  "lr": schedule.get_last_lr()[0]}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", teacher=teacher or "-")
        log(f"exits {method} epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} | {record['clips_per_s']:.0f} clips/s "
            f"| data-wait 0.0% (frozen features in memory) | lr {record['lr']:.2e}"
            + (f" | teacher {teacher}" if teacher else ""))
    heads.eval()
    return history
