"""Small tensor utilities of AdaCLIP: the scipy-equal Gaussian blur and a lean transformer block forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = [
    "GaussianBlur",
    "SentenceTree",
    "build_sentence_tree",
    "full_precision",
    "gaussian_kernel1d",
    "is_tracing",
    "pad_sentence_tree",
    "per_image",
    "reflect_indices",
    "residual_attention_block",
]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Return the normalised 1-D Gaussian kernel of ``scipy.ndimage.gaussian_filter`` (float64).

    Args:
        sigma: Standard deviation in pixels.
        truncate: The kernel reaches ``int(truncate * sigma + 0.5)`` pixels on each side.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def reflect_indices(size: int, radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Indices that pad a dimension of ``size`` by ``radius`` on both sides in scipy's "reflect" mode.

    "reflect" repeats the edge sample (``d c b a | a b c d | d c b a``), which torch's own padding modes do not offer;
    the indices fold any offset back into range, so it also works when ``radius`` exceeds ``size``. They are made on
    ``device`` directly (a copy from the host would make a GPU wait).
    """
    positions = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(positions >= size, 2 * size - 1 - positions, positions)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of ``[B, H, W]`` maps, equal to ``scipy.ndimage.gaussian_filter(m, sigma)`` per map.

    Args:
        sigma: Standard deviation in pixels (AdaCLIP uses 4).
        truncate: Kernel radius in standard deviations (scipy's default, 4).
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        self.sigma = sigma
        kernel = gaussian_kernel1d(sigma, truncate)
        self.radius = (kernel.numel() - 1) // 2
        self.register_buffer("kernel", kernel.float(), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Blur maps of shape ``[B, H, W]``; returns the same shape and dtype."""
        if self.sigma <= 0:
            return maps
        batch, height, width = maps.shape
        kernel = self.kernel.to(maps.dtype)
        rows = reflect_indices(height, self.radius, maps.device)
        cols = reflect_indices(width, self.radius, maps.device)
        blurred = F.conv1d(  # along the width
            maps[:, :, cols].reshape(batch * height, 1, -1),
            kernel.view(1, 1, -1),
        ).reshape(batch, height, width)
        blurred = F.conv1d(  # along the height
            blurred[:, rows, :].transpose(1, 2).reshape(batch * width, 1, -1),
            kernel.view(1, 1, -1),
        ).reshape(batch, width, height)
        return blurred.transpose(1, 2).contiguous()


def is_tracing() -> bool:
    """Whether the code runs under tracing or compilation (then nothing may be cached, nor read back to the host)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def per_image(function: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """``function(rows)``, computed one image (row) at a time on the CPU: the same numbers for any batch size.

    A matrix product with a single row runs through a matrix-vector kernel, one with several rows through a
    matrix-matrix kernel that sums in another order: ``[B, D] @ W`` would round differently for B = 1 and B > 1.
    Products with many rows per image (tokens) do not have this problem. On accelerators and under tracing (where
    the batch size must stay symbolic) the batch is computed at once.
    """
    if rows.device.type != "cpu" or rows.shape[0] == 1 or is_tracing():
        return function(rows)
    return torch.cat([function(row) for row in rows.split(1)])


def full_precision(device: torch.device) -> torch.autocast:
    """A context that switches autocast off on ``device``'s type, so that its operations run in their inputs' dtype."""
    return torch.autocast(device.type, enabled=False)


def _take_rows(tokens: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """Rows of tokens ``[B, N, W]``: a slice, or per-image indices ``[B, R]``."""
    if isinstance(rows, slice):
        return tokens[:, rows]
    return tokens.gather(1, rows.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _take_mask_rows(attn_mask: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """Query rows of a mask ``[N, N]`` or ``[B, 1, N, N]``; returns a mask that broadcasts to ``[B, heads, R, N]``."""
    if isinstance(rows, slice):
        return attn_mask[..., rows, :]
    if attn_mask.ndim == 2:
        return attn_mask[rows].unsqueeze(1)  # [B, 1, R, N]
    index = rows[:, None, :, None].expand(-1, 1, -1, attn_mask.shape[-1])
    return attn_mask.gather(2, index)


def _is_plain_block(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's standard self-attention block, which :func:`residual_attention_block` runs."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        return False
    attention = block.attn
    return (
        type(attention) is nn.MultiheadAttention
        and attention.batch_first
        and attention._qkv_same_embed_dim
        and attention.in_proj_bias is not None
        and attention.bias_k is None
        and not attention.add_zero_attn
    )


def residual_attention_block(
    block: nn.Module,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    rows: slice | torch.Tensor | None = None,
) -> torch.Tensor:
    """The forward of an open_clip transformer block, optionally for some query rows only.

    For open_clip's standard ``ResidualAttentionBlock`` the attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (on CPU, ``nn.MultiheadAttention``'s own fast path
    materialises the attention matrix instead, at half the speed). The computation is the block's own,
    ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` with its layer scales; only the order of float operations
    differs. Other blocks run their own forward.

    Args:
        block: An open_clip transformer block (batch first).
        x: Tokens ``[B, N, W]``.
        attn_mask: Boolean mask, ``True`` where a query may attend to a key: ``[N, N]`` or ``[B, 1, N, N]``.
        rows: The query rows whose outputs are wanted, a slice or per-image indices ``[B, R]``; ``None`` for all.
            Keys and values still come from every token, so the rows' outputs are those of the full forward.

    Returns:
        The block's output at the selected rows, ``[B, R, W]`` (``[B, N, W]`` for all rows).
    """
    if not _is_plain_block(block):
        if attn_mask is not None:  # open_clip's blocks take additive masks
            additive = torch.zeros(attn_mask.shape, dtype=x.dtype, device=x.device)
            attn_mask = additive.masked_fill_(~attn_mask, float("-inf"))
        output = block(x) if attn_mask is None else block(x, attn_mask=attn_mask)
        return output if rows is None else _take_rows(output, rows)
    attention = block.attn
    batch, n_tokens, width = x.shape
    heads = attention.num_heads
    hidden = block.ln_1(x)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    if rows is None:
        qkv = F.linear(hidden, weight, bias).view(batch, n_tokens, 3, heads, width // heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        residual = x
    else:  # exact: a row's output depends on its own query and on every token's key and value only
        kv = F.linear(hidden, weight[width:], bias[width:]).view(batch, n_tokens, 2, heads, width // heads)
        key, value = kv.permute(2, 0, 3, 1, 4).unbind(0)
        query = F.linear(_take_rows(hidden, rows), weight[:width], bias[:width])
        query = query.view(batch, -1, heads, width // heads).transpose(1, 2)
        residual = _take_rows(x, rows)
        attn_mask = None if attn_mask is None else _take_mask_rows(attn_mask, rows)
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    attended = attended.transpose(1, 2).reshape(batch, -1, width)
    x = residual + block.ls_1(F.linear(attended, attention.out_proj.weight, attention.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


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
