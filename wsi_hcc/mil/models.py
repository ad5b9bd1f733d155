"""Attention-MIL slide classifiers: gated attention (Ilse 2018), CLAM-SB/MB (Lu 2021), mean and max.

Input contract (every model)
----------------------------
``model(features)`` takes ONE bag: a float tensor ``(N, D)`` of the ``N`` tile features of a slide
(``(1, N, D)`` is accepted and squeezed; ``N >= 1``; ``D`` = the model's ``in_dim``, the feature
store's ``feature_dim``). Features are standardised inside the model with the ``input_mean`` and
``input_std`` buffers (set from the training tiles by the pipeline, saved with the weights), so raw
store features go in. Bags differ in size, so there is no batch dimension: train with
``batch_size=1``. Tile order does not matter (every model is permutation invariant).

Output contract
---------------
A ``MILOutput``:

- ``logits``: ``{head: (C_head,)}`` unnormalised class scores per head, e.g. ``{"label": (2,),
  "grade": (3,)}``; heads and their class counts are the ``heads`` the model was built with.
- ``attention``: ``(N,)`` non-negative tile weights summing to 1, aligned with the input rows:
  softmax attention for ``gated``/``clam_sb``; for ``clam_mb`` the branch of the predicted
  ``label`` class; ``1/N`` for ``mean``; for ``max`` a softmax over tiles of each tile's score for
  the predicted class (its ranking is exactly which tiles drive the max).
- ``attention_all``: ``(B, N)`` every attention branch (``B`` = 1 except ``clam_mb``).
- ``instance_loss``: CLAM's instance-clustering loss (a scalar tensor) when ``label`` was passed in
  training mode, else None.

``label`` (an int, the bag's class for the first head) is only used by CLAM's instance branch while
training; inference never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MILOutput", "GatedAttentionMIL", "CLAM", "PoolingMIL", "build_mil_model", "MODEL_NAMES"]

MODEL_NAMES = ("gated", "clam_sb", "clam_mb", "mean", "max")


@dataclass
class MILOutput:
    logits: dict[str, torch.Tensor]
    attention: torch.Tensor
    attention_all: torch.Tensor
    instance_loss: torch.Tensor | None = None


class _MILBase(nn.Module):
    """Holds the input standardisation (``input_mean``/``input_std`` buffers, saved with the weights;
    ``set_input_stats`` fills them from training tiles) and checks the bag shape."""

    def _init_input(self, in_dim: int) -> None:
        self.in_dim = in_dim
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))

    def set_input_stats(self, mean, std) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def tile_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-tile class scores ``{head: (N, C_head)}``: each tile scored as a bag of one, through the
        same embedding and heads, so tile maps and the slide decision speak one language."""
        h = self.embed(self._bag(features))
        return {name: self._head_logits(name, h) for name in self.heads}

    def _head_logits(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.classifiers[name](h)

    def _bag(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 2 or features.shape[1] != self.in_dim or features.shape[0] < 1:
            raise ValueError(f"expected one bag of tile features (N, {self.in_dim}) with N >= 1, "
                             f"got {tuple(features.shape)}")
        return (features.float() - self.input_mean) / self.input_std


class _GatedAttention(nn.Module):
    """Ilse et al. 2018: a_k = softmax_k( w^T (tanh(V h_k) * sigmoid(U h_k)) ), ``branches`` at once."""

    def __init__(self, dim: int, hidden: int, branches: int = 1, dropout: float = 0.0):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = self.w(self.v(h) * self.u(h))  # (N, B)
        return torch.softmax(scores.T, dim=1)  # (B, N), softmax over tiles


class GatedAttentionMIL(_MILBase):
    """Gated attention MIL: tiles -> fc embedding -> gated attention -> weighted mean -> one linear per head."""

    def __init__(self, in_dim: int, heads: dict[str, int], hidden: int = 256, attention_dim: int = 128,
                 dropout: float = 0.25):
        super().__init__()
        self._init_input(in_dim)
        self.heads = dict(heads)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = _GatedAttention(hidden, attention_dim, 1, dropout)
        self.classifiers = nn.ModuleDict({name: nn.Linear(hidden, c) for name, c in self.heads.items()})

    def forward(self, features: torch.Tensor, label: int | None = None) -> MILOutput:
        h = self.embed(self._bag(features))
        a = self.attention(h)  # (1, N)
        bag = a @ h  # (1, hidden)
        logits = {name: head(bag)[0] for name, head in self.classifiers.items()}
        return MILOutput(logits, a[0], a)


class CLAM(_MILBase):
    """CLAM (Lu et al. 2021), single-branch (``multi_branch=False``) or multi-branch.

    fc 512 -> gated attention (256) -> attention-pooled slide embedding. SB: one attention branch and
    a linear bag classifier per head. MB: one attention branch per class of the first head, each
    pooled embedding scored by its own linear unit (``C`` logits); other heads read the mean of the
    branch embeddings. Instance branch (first head only): in training, the ``k_sample`` most-attended
    tiles of the true class' branch are pseudo-labelled positive and the ``k_sample`` least-attended
    negative by that class' instance classifier; for the other classes, their top-k tiles are
    pseudo-labelled negative (out-of-class, SB: only with ``subtyping``). ``instance_loss`` is the
    mean cross-entropy; weigh it ``1 - bag_weight`` against the bag loss (0.7/0.3 in the paper).
    """

    def __init__(self, in_dim: int, heads: dict[str, int], multi_branch: bool = False, hidden: int = 512,
                 attention_dim: int = 256, dropout: float = 0.25, k_sample: int = 8, subtyping: bool = False):
        super().__init__()
        self._init_input(in_dim)
        self.heads, self.multi_branch = dict(heads), multi_branch
        self.k_sample, self.subtyping = k_sample, subtyping
        self.main = next(iter(self.heads))
        n_classes = self.heads[self.main]
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = _GatedAttention(hidden, attention_dim, n_classes if multi_branch else 1, dropout)
        if multi_branch:
            self.branch_classifiers = nn.ModuleList([nn.Linear(hidden, 1) for _ in range(n_classes)])
        self.classifiers = nn.ModuleDict({name: nn.Linear(hidden, c) for name, c in self.heads.items()
                                          if not (multi_branch and name == self.main)})
        self.instance_classifiers = nn.ModuleList([nn.Linear(hidden, 2) for _ in range(n_classes)])

    def _instance_loss(self, a: torch.Tensor, h: torch.Tensor, label: int) -> torch.Tensor:
        n = h.shape[0]
        k = min(self.k_sample, n // 2) if n >= 2 else 0
        losses = []
        if k == 0:
            return h.sum() * 0.0
        for c, classifier in enumerate(self.instance_classifiers):
            branch = a[c] if self.multi_branch else a[0]
            if c == label:
                top, bottom = torch.topk(branch, k).indices, torch.topk(-branch, k).indices
                x = torch.cat([h[top], h[bottom]])
                y = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)]).to(h.device)
            elif self.multi_branch or self.subtyping:
                x = h[torch.topk(branch, k).indices]
                y = torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            losses.append(F.cross_entropy(classifier(x), y))
        return torch.stack(losses).mean()

    def _head_logits(self, name: str, h: torch.Tensor) -> torch.Tensor:
        if self.multi_branch and name == self.main:
            return torch.cat([clf(h) for clf in self.branch_classifiers], dim=1)
        return self.classifiers[name](h)

    def forward(self, features: torch.Tensor, label: int | None = None) -> MILOutput:
        h = self.embed(self._bag(features))
        a = self.attention(h)  # (B, N)
        pooled = a @ h  # (B, hidden)
        logits = {}
        if self.multi_branch:
            logits[self.main] = torch.cat([clf(pooled[c]) for c, clf in enumerate(self.branch_classifiers)])
            shared = pooled.mean(dim=0)
        else:
            shared = pooled[0]
        for name, head in self.classifiers.items():
            logits[name] = head(shared)
        logits = {name: logits[name] for name in self.heads}
        branch = int(logits[self.main].argmax()) if self.multi_branch else 0
        loss = self._instance_loss(a, h, int(label)) if self.training and label is not None else None
        return MILOutput(logits, a[branch], a, loss)


class PoolingMIL(_MILBase):
    """Baselines. ``mean``: average of the embedded tiles, then linear heads. ``max``: a per-tile
    classifier per head, bag logits = the maximum over tiles of each class' tile logit."""

    def __init__(self, in_dim: int, heads: dict[str, int], pooling: str = "mean", hidden: int = 256,
                 dropout: float = 0.25):
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be mean or max, not {pooling!r}")
        self._init_input(in_dim)
        self.heads, self.pooling = dict(heads), pooling
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifiers = nn.ModuleDict({name: nn.Linear(hidden, c) for name, c in self.heads.items()})

    def forward(self, features: torch.Tensor, label: int | None = None) -> MILOutput:
        h = self.embed(self._bag(features))
        n = h.shape[0]
        if self.pooling == "mean":
            bag = h.mean(dim=0)
            logits = {name: head(bag) for name, head in self.classifiers.items()}
            a = torch.full((1, n), 1.0 / n, device=h.device)
        else:
            tile_logits = {name: head(h) for name, head in self.classifiers.items()}  # (N, C)
            logits = {name: t.max(dim=0).values for name, t in tile_logits.items()}
            main = next(iter(self.heads))
            predicted = int(logits[main].argmax())
            a = torch.softmax(tile_logits[main][:, predicted], dim=0)[None]
        return MILOutput(logits, a[0], a)


def build_mil_model(name: str, in_dim: int, heads: dict[str, int], *, hidden: int | None = None,
                    dropout: float = 0.25, k_sample: int = 8) -> nn.Module:
    """One of ``MODEL_NAMES`` for ``in_dim``-dimensional tile features and ``heads`` {name: classes}.

    The first head is the main one (CLAM's branches and instance classifiers follow it).
    """
    if not heads or any(c < 2 for c in heads.values()):
        raise ValueError(f"heads {heads} need at least one head, each with at least two classes")
    if name == "gated":
        return GatedAttentionMIL(in_dim, heads, hidden=hidden or 256, dropout=dropout)
    if name in ("clam_sb", "clam_mb"):
        return CLAM(in_dim, heads, multi_branch=name == "clam_mb", hidden=hidden or 512, dropout=dropout,
                    k_sample=k_sample)
    if name in ("mean", "max"):
        return PoolingMIL(in_dim, heads, pooling=name, hidden=hidden or 256, dropout=dropout)
    raise ValueError(f"unknown MIL model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
