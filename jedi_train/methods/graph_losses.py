"""The two measurements graph distillation (jedi_train/methods/graph_distillation.py) is built on.

`sinkhorn_distance`: the entropic earth mover's distance of Cuturi (NeurIPS 2013), the transport cost
<P_eps, C> of the plan that Sinkhorn's iterations find for the problem regularised by eps * entropy. It
approaches the exact optimal transport cost as eps -> 0 and is differentiable in both histograms: the
iterations are unrolled, so autograd follows them. They run on the log scale (potentials f, g), which
keeps a small eps from underflowing exp(-C / eps).

`compact_bilinear`: the tensor sketch of Gao et al. (CVPR 2016, "Compact bilinear pooling"): the outer
product x y^T (n1 * n2 numbers) replaced by the circular convolution of two count sketches of size D,
computed by FFT. Its inner products estimate those of the full bilinear vectors,
<CBP(x, y), CBP(x', y')> ~ <x, x'> <y, y'>, without bias, with an error that shrinks like 1 / sqrt(D).
The random hashes and signs are drawn once from a seed and kept as buffers, so every rank, every resume
and every evaluation sketch with the same ones.
"""
from __future__ import annotations

import torch
from torch import nn


def sinkhorn_distance(p: torch.Tensor, q: torch.Tensor, cost: torch.Tensor, epsilon: float = 0.05,
                      iterations: int = 50) -> torch.Tensor:
    """Entropic earth mover's distance between histograms p [..., n] and q [..., m] (each sums to 1; the
    leading dimensions broadcast) for the ground cost [n, m]; returns [...]. The last update matches q's
    marginal exactly and p's to the tolerance the iterations reach."""
    log_p = p.clamp_min(1e-30).log()
    log_q = q.clamp_min(1e-30).log()
    scaled_cost = cost / epsilon
    g = torch.zeros_like(log_q)
    f = torch.zeros_like(log_p)
    for _ in range(iterations):  # potentials in units of epsilon
        f = log_p - torch.logsumexp(g.unsqueeze(-2) - scaled_cost, dim=-1)
        g = log_q - torch.logsumexp(f.unsqueeze(-1) - scaled_cost, dim=-2)
    plan = torch.exp(f.unsqueeze(-1) + g.unsqueeze(-2) - scaled_cost)
    return (plan * cost).sum(dim=(-2, -1))


class TensorSketch(nn.Module):
    """The random count sketches of a compact bilinear pooling of x [.., n1] with y [.., n2] into D numbers:
    hash_x[i] in [0, D) and sign_x[i] in {-1, 1} for each of x's coordinates, likewise for y."""

    def __init__(self, x_dim: int, y_dim: int, out_dim: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.out_dim = out_dim
        self.register_buffer("hash_x", torch.randint(out_dim, (x_dim,), generator=generator))
        self.register_buffer("sign_x", torch.randint(2, (x_dim,), generator=generator).float() * 2 - 1)
        self.register_buffer("hash_y", torch.randint(out_dim, (y_dim,), generator=generator))
        self.register_buffer("sign_y", torch.randint(2, (y_dim,), generator=generator).float() * 2 - 1)


def count_sketch(x: torch.Tensor, hashes: torch.Tensor, signs: torch.Tensor, out_dim: int) -> torch.Tensor:
    """[.., n] -> [.., D]: coordinate i of x, times its sign, added into bin hashes[i]."""
    sketch = x.new_zeros(*x.shape[:-1], out_dim)
    return sketch.index_add(-1, hashes, x * signs.to(x.dtype))


def compact_bilinear(x: torch.Tensor, y: torch.Tensor, sketch: TensorSketch) -> torch.Tensor:
    """Tensor sketch of the outer product x y^T: [.., n1], [.., n2] -> [.., D]. The circular convolution of
    the two count sketches is a product of their Fourier transforms."""
    d = sketch.out_dim
    x_sketch = count_sketch(x.float(), sketch.hash_x, sketch.sign_x, d)
    y_sketch = count_sketch(y.float(), sketch.hash_y, sketch.sign_y, d)
    return torch.fft.irfft(torch.fft.rfft(x_sketch, dim=-1) * torch.fft.rfft(y_sketch, dim=-1), n=d, dim=-1)
