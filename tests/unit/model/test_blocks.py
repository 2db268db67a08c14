"""The lean attention-block forward (``model/blocks.py``) against open_clip's own block."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from anomalib_adaclip.model.blocks import residual_attention_block
from tests.conftest import random_images


@pytest.mark.parametrize("n_prompts", [0, 5])
def test_block_forward_equals_open_clip_block(n_prompts: int) -> None:
    """The SDPA block forward equals open_clip's own, with prompt tokens appended, for all rows and for some."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(64, 4).eval()
    x = torch.randn(3, 17 + n_prompts, 64)
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
    additive = torch.zeros(causal.shape).masked_fill(~causal, float("-inf"))
    rows = torch.tensor([[0, 5], [3, 3], [16, 1]])
    with torch.no_grad():
        expected = block(x)
        expected_causal = block(x, attn_mask=additive)
        torch.testing.assert_close(residual_attention_block(block, x), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            residual_attention_block(block, x, rows=slice(0, 1)), expected[:, :1], atol=1e-5, rtol=0
        )
        torch.testing.assert_close(residual_attention_block(block, x, causal), expected_causal, atol=1e-5, rtol=0)
        per_image = residual_attention_block(block, x, causal.expand(3, 1, -1, -1), rows=rows)
        torch.testing.assert_close(per_image, expected_causal[torch.arange(3)[:, None], rows], atol=1e-5, rtol=0)
        shared = residual_attention_block(block, x, causal, rows=rows)
        torch.testing.assert_close(shared, per_image, atol=1e-5, rtol=0)


def test_embedding_only_pass_equals_full_pass(make_model: Callable) -> None:
    """The frozen pass computes the CLS token only in its last block: the embedding is unchanged."""
    model = make_model()
    images = random_images(2, 224)
    with torch.no_grad():
        full, tokens = model._encode_image(images, None)
        cls_only, no_tokens = model._encode_image(images, None, embedding_only=True)
    assert len(tokens) == 4 and no_tokens == []
    torch.testing.assert_close(cls_only, full, atol=1e-5, rtol=0)
