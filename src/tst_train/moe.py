"""A Qwen3-MoE style mixture-of-experts feed-forward block: token-choice top-k routing, grouped experts.

Each position's hidden state goes to a softmax router over ``E`` experts; its ``k`` most probable experts
(SwiGLU each) run on it and their outputs are summed with the router's probabilities as weights (renormalised
over the ``k`` with ``norm_topk_prob``, as Qwen3-MoE). No capacity limit, so no position is dropped. In TST's
superposition phase the router sees the bag means like every other layer does: nothing here knows about bags.

The experts are computed grouped: the ``N·k`` (position, expert) pairs are sorted by expert and each expert
multiplies its contiguous slice — one grouped matmul (``torch``'s ``grouped_mm``) where the device has a fast
one (CUDA, bf16), else one matmul per expert (a loop over experts, never over positions).

Training needs two more things, which stay out of the model's output: the load-balancing loss (Switch
Transformer's ``E·Σ f_i·P_i``, ``aux_loss`` after each training forward, which the trainer adds with its
coefficient) and routing statistics (per-expert load and router entropy, accumulated over a step for the
metrics, and for the auxiliary-loss-free bias update of DeepSeek-V3, :meth:`MoE.update_bias`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupedExperts", "MoE", "Router"]


class Router(nn.Module):
    """Softmax over experts, top-k choice; ``expert_bias`` shifts the *choice* only (auxiliary-loss-free
    balancing), never the weights, so with a zero bias this is exactly Qwen3-MoE's router."""

    def __init__(self, dim: int, n_experts: int, top_k: int, norm_topk_prob: bool) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(dim, n_experts, bias=False)
        # Persistent: the bias is training state (a resumed run must choose the same experts).
        self.register_buffer("expert_bias", torch.zeros(n_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x ``(N, d)`` → router probabilities ``(N, E)`` (float32), chosen experts ``(N, k)`` and their
        weights ``(N, k)`` (float32)."""
        probs = F.softmax(self.gate(x).float(), dim=-1)  # (N, E): in float32, as HF, so bf16 ties don't flip choices
        _, chosen = torch.topk(probs + self.expert_bias, self.top_k, dim=-1)  # (N, k)
        weights = probs.gather(-1, chosen)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdim=True)
        return probs, chosen, weights


def _grouped_mm():
    """torch's grouped matmul (public from 2.10 as ``F.grouped_mm``, private ``torch._grouped_mm`` before)."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


class GroupedExperts(nn.Module):
    """``E`` SwiGLU experts stored as 3-D weights: ``w1``/``w3`` ``(E, ffn, d)`` (HF gate/up), ``w2`` ``(E, d, ffn)``."""

    def __init__(self, n_experts: int, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, ffn_dim, dim))
        self.w3 = nn.Parameter(torch.empty(n_experts, ffn_dim, dim))
        self.w2 = nn.Parameter(torch.empty(n_experts, dim, ffn_dim))
        self.use_grouped_mm: bool | None = None  # None: where fast (CUDA with bf16); tests force either path

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x ``(M, d)``: rows sorted by expert, ``counts`` ``(E,)`` rows per expert → ``(M, d)``."""
        grouped = self.use_grouped_mm
        if grouped is None:
            grouped = x.is_cuda and _grouped_mm() is not None and _compute_dtype(x) == torch.bfloat16
        if grouped:
            return self._grouped(x, counts)
        out = [F.linear(F.silu(F.linear(xe, w1)) * F.linear(xe, w3), w2)  # (n_e, d) per expert
               for xe, w1, w3, w2 in zip(x.split(counts.tolist()), self.w1, self.w3, self.w2)]
        return torch.cat(out)

    def _grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        gmm, dtype = _grouped_mm(), _compute_dtype(x)
        offs = counts.cumsum(0).to(torch.int32)  # (E,): end of each expert's rows; no host sync
        x = x.to(dtype)
        w1, w3, w2 = (w.to(dtype).transpose(-2, -1) for w in (self.w1, self.w3, self.w2))  # (E, d, ffn) …
        h = F.silu(gmm(x, w1, offs=offs)) * gmm(x, w3, offs=offs)  # (M, ffn)
        return gmm(h, w2, offs=offs)  # (M, d)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in here: autocast's when it is on (grouped_mm is not an autocast op)."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


class MoE(nn.Module):
    """Router + grouped experts (+ an optional always-on shared SwiGLU expert). ``(B, L, d)`` → ``(B, L, d)``."""

    def __init__(self, dim: int, ffn_dim: int, n_experts: int, top_k: int, norm_topk_prob: bool,
                 shared: nn.Module | None = None) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}")
        self.n_experts, self.top_k = n_experts, top_k
        self.router = Router(dim, n_experts, top_k, norm_topk_prob)
        self.experts = GroupedExperts(n_experts, dim, ffn_dim)
        self.shared = shared  # a dense SwiGLU every position goes through, or None
        self.aux_loss: torch.Tensor | None = None  # of the last training forward (with its graph)
        # Routing statistics summed over the training forwards since the last read_stats(): (position, expert)
        # pairs per expert; the router's entropy, positions, and the balancing loss × positions. Not persistent:
        # they span one step.
        self.register_buffer("load", torch.zeros(n_experts), persistent=False)
        self.register_buffer("sums", torch.zeros(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        flat = x.reshape(-1, d)  # (N, d)
        probs, chosen, weights = self.router(flat)  # (N, E), (N, k), (N, k)
        flat_choice = chosen.flatten()  # (N·k,)
        order = flat_choice.argsort(stable=True)  # (N·k,): (position, slot) pairs grouped by expert
        # (E,) choices per expert; a fixed-size scatter, not bincount, whose output size depends on the data
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=x.device).scatter_add_(
            0, flat_choice, torch.ones_like(flat_choice))
        source = order // self.top_k  # (N·k,): the position each sorted pair comes from
        routed = self.experts(flat[source], counts)  # (N·k, d)
        routed = routed * weights.flatten()[order, None].to(routed.dtype)  # (N·k, d): weighted by the router
        out = torch.zeros_like(flat, dtype=routed.dtype).index_add_(0, source, routed)  # (N, d): summed per position
        if self.shared is not None:
            out = out + self.shared(flat)
        if self.training and torch.is_grad_enabled():
            self._record(probs, counts)
        return out.reshape(B, L, d).to(x.dtype)

    def _record(self, probs: torch.Tensor, counts: torch.Tensor) -> None:
        """Switch Transformer's balancing loss ``E·Σ_i f_i·P_i`` (f_i: share of the N·k choices that went to
        expert i, P_i: its mean probability; 1.0 when perfectly balanced), and the step's statistics."""
        n = probs.shape[0]
        share = counts.float() / (n * self.top_k)  # (E,) f_i, no gradient (a count)
        self.aux_loss = self.n_experts * (share * probs.mean(0)).sum()
        with torch.no_grad():
            self.load += counts.float()
            entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
            self.sums += torch.stack((entropy, probs.new_tensor(float(n)), self.aux_loss.detach() * n))

    def read_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(load ``(E,)``, (entropy sum, positions, balancing loss × positions) ``(3,)``) since the last read; resets them."""
        load, sums = self.load.clone(), self.sums.clone()
        self.load.zero_()
        self.sums.zero_()
        return load, sums

    @torch.no_grad()
    def update_bias(self, load: torch.Tensor, rate: float) -> None:
        """DeepSeek-V3's auxiliary-loss-free balancing: raise the choice bias of under-loaded experts and lower
        it for over-loaded ones by ``rate`` each step (``load``: the step's count, summed over ranks)."""
        self.router.expert_bias += rate * torch.sign(load.mean() - load)
