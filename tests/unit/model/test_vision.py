"""The one loop over the CLIP vision tower (``model/vision.py``) against a loop written here over open_clip's blocks.

The hand-written loop calls open_clip's own ``ResidualAttentionBlock`` forward (not this package's lean one), and its
embedding is first checked against open_clip's ``VisionTransformer.forward``. The tower is the micro CLIP (112 px,
an 8 x 8 grid of width-64 tokens, 4 blocks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer

from anomalib_adaclip.model.vision import vision_forward
from tests.conftest import MICRO_BACKBONE, random_images

ATOL = 1e-5  # the lean block runs attention through another kernel (tests/unit/model/test_blocks.py)


@pytest.fixture(scope="module")
def visual(micro_weights: Path) -> VisionTransformer:
    clip = CLIP(**MICRO_BACKBONE)
    clip.load_state_dict(torch.load(micro_weights, weights_only=True))
    return clip.visual.eval()


def open_clip_loop(
    visual: VisionTransformer, images: torch.Tensor, prompts: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """open_clip's stem, each block's own forward, its pooling; prompts appended before the first blocks."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    n_tokens = x.shape[1]
    tokens = {}
    for index, block in enumerate(visual.transformer.resblocks):
        if prompts is not None and index < prompts.shape[0]:
            x = torch.cat([x[:, :n_tokens], prompts[index].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
        tokens[index] = x[:, 1:n_tokens]
    return visual.ln_post(x[:, 0]) @ visual.proj, tokens


def test_the_hand_written_loop_is_open_clips_forward(visual: VisionTransformer) -> None:
    images = random_images(2, 112)
    with torch.no_grad():
        embedding, _ = open_clip_loop(visual, images)
        torch.testing.assert_close(embedding, visual(images), rtol=0, atol=ATOL)


def test_vision_forward_equals_the_loop_and_returns_the_blocks_asked_for(visual: VisionTransformer) -> None:
    images = random_images(2, 112)
    with torch.no_grad():
        expected_embedding, expected_tokens = open_clip_loop(visual, images)
        embedding, tokens = vision_forward(visual, images, keep_blocks=(0, 2))
        _, none = vision_forward(visual, images)
    assert set(tokens) == {0, 2} and none == {}
    assert embedding.shape == (2, 32) and tokens[0].shape == (2, 64, 64)  # no class token: 8 x 8 patches of width 64
    torch.testing.assert_close(embedding, expected_embedding, rtol=0, atol=ATOL)
    for block in (0, 2):
        torch.testing.assert_close(tokens[block], expected_tokens[block], rtol=0, atol=ATOL)
    assert not torch.allclose(tokens[0], tokens[2], atol=1e-3)  # two different blocks


def test_prompts_are_appended_then_replaced_and_dropped_from_the_tokens(visual: VisionTransformer) -> None:
    images = random_images(2, 112, seed=1)
    prompts = 0.5 * torch.randn(2, 1, 3, 64, generator=torch.Generator().manual_seed(2))  # depth 2, length 3
    with torch.no_grad():
        expected_embedding, expected_tokens = open_clip_loop(visual, images, prompts)
        embedding, tokens = vision_forward(visual, images, keep_blocks=range(4), prompts=prompts)
        plain, _ = vision_forward(visual, images)
    torch.testing.assert_close(embedding, expected_embedding, rtol=0, atol=ATOL)
    for block in range(4):
        assert tokens[block].shape == (2, 64, 64)
        torch.testing.assert_close(tokens[block], expected_tokens[block], rtol=0, atol=ATOL)
    assert not torch.allclose(embedding, plain, atol=1e-3)  # the prompts changed something


def test_the_class_row_embedding_is_the_full_embedding_for_any_batch_size(visual: VisionTransformer) -> None:
    images = random_images(3, 112, seed=3)
    with torch.no_grad():
        full, _ = vision_forward(visual, images)
        class_row, none = vision_forward(visual, images, class_row_embedding=True)
        with_last, tokens = vision_forward(visual, images, keep_blocks=(3,), class_row_embedding=True)
        alone = torch.cat([vision_forward(visual, image[None], class_row_embedding=True)[0] for image in images])
    assert none == {} and set(tokens) == {3}
    torch.testing.assert_close(class_row, full, rtol=0, atol=ATOL)
    torch.testing.assert_close(with_last, class_row, rtol=0, atol=0)
    torch.testing.assert_close(tokens[3], vision_forward(visual, images, keep_blocks=(3,))[1][3], rtol=0, atol=0)
    torch.testing.assert_close(alone, class_row, rtol=0, atol=0)  # one image at a time: batch size does not matter
