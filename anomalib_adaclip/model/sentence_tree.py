"""Prefix trees of the prompt sentences: every distinct token prefix is encoded once by the causal text tower."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["SentenceTree", "build_sentence_tree", "pad_sentence_tree"]


class SentenceTree(NamedTuple):
    """The sentences of one class name as a prefix tree of their tokens, for a causal text tower.

    In a causal tower a token's state depends only on the tokens up to it, so sentences that begin alike share those
    states: each distinct prefix is one node, which attends to the nodes of its own prefix (its ancestors and
    itself), exactly what the causal mask lets that token see in each of its sentences. The 48 sentences of a class
    (about 670 tokens when padded to the longest) make about 200 nodes.

    From block 1 on, the text prompts overwrite positions ``1 .. shared`` of every sentence; those positions (and the
    start token) then hold the same states in all sentences and become single nodes that every node attends to.

    Attributes:
        tokens: Token of each node of block 0, ``[N0]``.
        positions: Position of each node of block 0, ``[N0]``.
        mask: Block 0's attention mask, ``True`` where a node may attend, ``[N0, N0]``.
        sources: Block-0 node whose output feeds each node of the later blocks, ``[N1]``.
        later_mask: Attention mask of the later blocks, ``[N1, N1]``.
        ends: Node of each sentence's end-of-text token in the later blocks, ``[S]``.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    sources: torch.Tensor
    later_mask: torch.Tensor
    ends: torch.Tensor


def _ancestry_mask(parents: list[int]) -> torch.Tensor:
    """``mask[i, j]`` is True when node ``j`` is node ``i`` or one of its ancestors (parents precede children)."""
    mask = torch.zeros(len(parents), len(parents), dtype=torch.bool)
    for node, parent in enumerate(parents):
        if parent >= 0:
            mask[node] = mask[parent]
        mask[node, node] = True
    return mask


def build_sentence_tree(tokens: torch.Tensor, shared: int = 0) -> SentenceTree:
    """Build the prefix tree of tokenised sentences.

    Args:
        tokens: Tokenised sentences ``[S, context]``, each ending at its largest token (end of text), zero-padded.
        shared: Number of positions after the start token that the prompts overwrite in every later block (0 when
            no prompt reaches the text tower).

    Returns:
        The tree, on the CPU.
    """
    rows, ends = tokens.tolist(), tokens.argmax(dim=-1).tolist()
    node_of: dict[tuple[int, ...], int] = {}
    node_tokens, positions, parents = [], [], []
    paths = []
    for row, end in zip(rows, ends, strict=True):
        path: list[int] = []
        for position in range(end + 1):
            prefix = tuple(row[: position + 1])
            if prefix not in node_of:
                node_of[prefix] = len(node_tokens)
                node_tokens.append(row[position])
                positions.append(position)
                parents.append(path[-1] if path else -1)
            path.append(node_of[prefix])
        paths.append(path)
    if shared == 0:
        mask = _ancestry_mask(parents)
        sources = torch.arange(len(parents))
        sentence_ends = torch.tensor([path[-1] for path in paths])
        return SentenceTree(torch.tensor(node_tokens), torch.tensor(positions), mask, sources, mask, sentence_ends)
    # Later blocks: nodes 0 .. shared are positions 0 .. shared (shared by all sentences, overwritten by the prompts
    # from block 1 on, so their block-0 source does not matter), then every node past position `shared`.
    later = [node for node, position in enumerate(positions) if position > shared]
    later_index = {node: shared + 1 + index for index, node in enumerate(later)}
    later_parents = list(range(-1, shared)) + [
        later_index[parents[node]] if positions[node] > shared + 1 else shared for node in later
    ]
    sources = torch.tensor([0] * (shared + 1) + later)
    sentence_ends = torch.tensor(
        [end if end <= shared else later_index[path[-1]] for path, end in zip(paths, ends, strict=True)]
    )
    return SentenceTree(
        torch.tensor(node_tokens),
        torch.tensor(positions),
        _ancestry_mask(parents),
        sources,
        _ancestry_mask(later_parents),
        sentence_ends,
    )


def pad_sentence_tree(
    tree: SentenceTree, later_states: torch.Tensor, n_nodes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the later blocks' states ``[N1, W]`` and mask of a tree to ``n_nodes`` nodes.

    Padding nodes are zeros that attend to themselves only (a row without any key would give NaN, and NaN values
    would leak into real nodes through their zero attention weights); no real node attends to them.
    """
    n_real = len(tree.sources)
    states = F.pad(later_states, (0, 0, 0, n_nodes - n_real))
    mask = torch.eye(n_nodes, dtype=torch.bool, device=tree.later_mask.device)
    mask[:n_real, :n_real] = tree.later_mask
    return states, mask
