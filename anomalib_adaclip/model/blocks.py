"""Lean transformer-block forward and the numerics helpers that keep AdaCLIP exact and batch-independent."""

from __future__ import annotations

from collections.abc import Callable

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["full_precision", "is_tracing", "per_image", "residual_attention_block"]


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
        and attention.in_proj_weight is not None  # one packed q/k/v projection (equal embedding sizes)
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
