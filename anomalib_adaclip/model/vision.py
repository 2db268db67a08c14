"""The one loop over the blocks of the CLIP vision tower, shared by every vision pass of the package.

:func:`vision_forward` runs open_clip's ``VisionTransformer`` block by block (through the lean
:func:`~anomalib_adaclip.model.blocks.residual_attention_block`) and returns the image embedding and the tokens of the
blocks asked for. AdaCLIP's frozen and prompted passes (:class:`~anomalib_adaclip.model.AdaCLIPModel`) and the plain
pass of the mutual scoring (:mod:`.mutual_scoring`) all go through it, so a frozen pass that feeds both computes
exactly what each of them computes alone.

Blocks are counted **from 0** here (``keep_blocks``): block ``b``'s output is the residual stream after it, before
``ln_post``. The package's ``feature_layers`` (AdaCLIP's and MuSc's) count from 1: layer ``l`` is block ``l - 1``
(:func:`~anomalib_adaclip.model.mutual_scoring.musc_blocks` converts MuSc's).
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from open_clip.transformer import VisionTransformer

from .blocks import per_image, residual_attention_block

__all__ = ["vision_forward"]


def vision_forward(
    visual: VisionTransformer,
    images: torch.Tensor,
    *,
    keep_blocks: Collection[int] = (),
    prompts: torch.Tensor | None = None,
    class_row_embedding: bool = False,
    native_blocks: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run the vision tower; return the image embedding and the patch tokens of the blocks in ``keep_blocks``.

    Args:
        visual: The CLIP vision tower (a standard open_clip ViT pooled at the class token).
        images: Normalised images ``[B, 3, H, W]``.
        keep_blocks: 0-based blocks whose outputs are returned (class and prompt tokens dropped).
        prompts: Vision prompts ``[depth, B or 1, length, width]`` (AdaCLIP): appended after the class and patch
            tokens before block 0 and replaced before blocks 1 to ``depth - 1``; they carry no positional embedding.
        class_row_embedding: Compute the embedding from the last block's class-token row alone, one image at a time
            (its keys and values still come from every token, so it is exact; the numbers then do not depend on the
            batch size). When the last block's tokens are kept too, the full block also runs for them.
        native_blocks: Run each block's own open_clip forward (``nn.MultiheadAttention``) instead of the lean
            :func:`~anomalib_adaclip.model.blocks.residual_attention_block`: open_clip's numbers to the bit, at about
            half the speed on the CPU. The online rarity scoring uses it: its re-scoring ranks near-equal image
            similarities, where the lean path's rounding (about 3e-6 in the tokens) can change the order.

    Returns:
        ``ln_post(class token of the last block) @ proj``, ``[B, embed]`` (not normalised), and ``{block: tokens
        [B, h*w, width]}`` for every block of ``keep_blocks``.
    """
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
    x = visual.ln_pre(x + visual.positional_embedding.to(x.dtype))
    n_tokens = x.shape[1]
    blocks = visual.transformer.resblocks
    last = len(blocks) - 1
    depth = 0 if prompts is None else prompts.shape[0]
    kept: dict[int, torch.Tensor] = {}
    class_row = None
    for index, block in enumerate(blocks):
        if index < depth:
            block_prompts = prompts[index].to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :n_tokens], block_prompts], dim=1)
        if class_row_embedding and index == last:
            # One query row per image: per image on the CPU, so that the numbers do not depend on the batch size.
            class_row = per_image(
                lambda tokens, block=block: residual_attention_block(block, tokens, rows=slice(0, 1)), x
            )[:, 0]
            if index not in keep_blocks:
                break
        x = block(x) if native_blocks else residual_attention_block(block, x)
        if index in keep_blocks:
            kept[index] = x[:, 1:n_tokens]
    cls = x[:, 0] if class_row is None else class_row
    embedding = per_image(lambda row: visual.ln_post(row) @ visual.proj, cls)
    return embedding, kept
