"""The state of RareCLIP's online rarity scoring: everything an image leaves behind, as one immutable bank.

:class:`~anomalib_adaclip.model.rarity.RarityScoring` computes each image's outputs and the bank it leaves from the
bank before it, so an image can be scored and then admitted or not (the bank is replaced or kept), and a snapshot
(:meth:`RarityBank.state_dict`, plain tensors and integers, safe for ``torch.load(weights_only=True)``) restores a
scorer that continues bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["RarityBank"]


@dataclasses.dataclass(frozen=True)
class RarityBank:
    """Everything RareCLIP keeps between images: immutable; an update returns a new bank.

    Attributes:
        features: Per ``r`` (of 1, 3) and rarity layer, the unit prototypes ``[M, C]``, oldest first.
        measures: Their rarity measures ``[T, M]``, one row per earlier image kept (oldest first).
        normal_counts: Per ``r`` and layer, how many prototypes at the front come from the ``k_shot`` normal images.
        aaif: Per rarity layer, the unit foreground features of the remembered images ``[n, C]`` (normal ones first).
        scores: The remembered images' scores before re-scoring ``[n']`` (re-scoring only).
        embeddings: Their unit image embeddings ``[n', D]`` (re-scoring only).
        foreground: The running mean of the text maps ``[h*w]``; empty before the first update.
        seen: Images that entered the bank (``tested_num`` in the authors' code).
    """

    features: tuple[tuple[torch.Tensor, ...], ...]
    measures: tuple[tuple[torch.Tensor, ...], ...]
    normal_counts: tuple[tuple[int, ...], ...]
    aaif: tuple[torch.Tensor, ...]
    scores: torch.Tensor
    embeddings: torch.Tensor
    foreground: torch.Tensor
    seen: int = 0

    @classmethod
    def empty(cls, n_layers: int, n_r: int, device: torch.device | str | None = None) -> RarityBank:
        """A bank with nothing in it, for ``n_layers`` rarity layers and ``n_r`` neighbourhood sizes."""
        none = torch.zeros(0, device=device)
        return cls(
            features=tuple(tuple(none for _ in range(n_layers)) for _ in range(n_r)),
            measures=tuple(tuple(none for _ in range(n_layers)) for _ in range(n_r)),
            normal_counts=tuple(tuple(0 for _ in range(n_layers)) for _ in range(n_r)),
            aaif=tuple(none for _ in range(n_layers)),
            scores=none,
            embeddings=none,
            foreground=none,
        )

    @property
    def prototypes(self) -> int:
        """Prototypes per bank (the first ``r`` and layer; all are alike)."""
        return int(self.features[0][0].shape[0])

    def nbytes(self) -> int:
        """Bytes held by the bank's tensors."""
        tensors = [t for row in (*self.features, *self.measures) for t in row]
        tensors += [*self.aaif, self.scores, self.embeddings, self.foreground]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        """The bank as a flat dict of tensors and integers (``torch.save`` and ``weights_only`` loading safe)."""
        state: dict[str, Any] = {"seen": self.seen, "foreground": self.foreground, "scores": self.scores}
        state["embeddings"] = self.embeddings
        for ri, (features, measures, counts) in enumerate(
            zip(self.features, self.measures, self.normal_counts, strict=True)
        ):
            for li, (feature, measure, count) in enumerate(zip(features, measures, counts, strict=True)):
                state[f"features.{ri}.{li}"] = feature
                state[f"measures.{ri}.{li}"] = measure
                state[f"normal_counts.{ri}.{li}"] = count
        for li, aaif in enumerate(self.aaif):
            state[f"aaif.{li}"] = aaif
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], n_layers: int, n_r: int) -> RarityBank:
        """Rebuild a bank from :meth:`state_dict`'s output (tensors are cloned, so the bank owns them).

        Raises:
            ValueError: Keys missing or unexpected for ``n_layers`` rarity layers (another setting's bank).
        """
        expected = {"seen", "foreground", "scores", "embeddings"}
        expected |= {
            f"{kind}.{ri}.{li}"
            for kind in ("features", "measures", "normal_counts")
            for ri in range(n_r)
            for li in range(n_layers)
        }
        expected |= {f"aaif.{li}" for li in range(n_layers)}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            msg = (
                f"The rarity bank state does not fit a scorer of {n_layers} rarity layers: missing {missing[:6]}, "
                f"unexpected {unexpected[:6]} (a snapshot of another setting?)."
            )
            raise ValueError(msg)

        def grid(kind: str) -> tuple[tuple[Any, ...], ...]:
            return tuple(tuple(state[f"{kind}.{ri}.{li}"] for li in range(n_layers)) for ri in range(n_r))

        return cls(
            features=tuple(tuple(t.clone() for t in row) for row in grid("features")),
            measures=tuple(tuple(t.clone() for t in row) for row in grid("measures")),
            normal_counts=tuple(tuple(int(c) for c in row) for row in grid("normal_counts")),
            aaif=tuple(state[f"aaif.{li}"].clone() for li in range(n_layers)),
            scores=state["scores"].clone(),
            embeddings=state["embeddings"].clone(),
            foreground=state["foreground"].clone(),
            seen=int(state["seen"]),
        )

    def to(self, device: torch.device | str) -> RarityBank:
        """The same bank with its tensors on ``device``."""
        return RarityBank(
            features=tuple(tuple(t.to(device) for t in row) for row in self.features),
            measures=tuple(tuple(t.to(device) for t in row) for row in self.measures),
            normal_counts=self.normal_counts,
            aaif=tuple(t.to(device) for t in self.aaif),
            scores=self.scores.to(device),
            embeddings=self.embeddings.to(device),
            foreground=self.foreground.to(device),
            seen=self.seen,
        )
