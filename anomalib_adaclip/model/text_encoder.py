"""The prompted CLIP text tower of AdaCLIP: the sentences of class names to normal/abnormal text features.

A class name becomes 28 normal and 20 abnormal sentences (:class:`~.prompting.PromptEnsemble`). Their embeddings
(end-of-text token, ``ln_final``, projection) are normalised, averaged per state and normalised again: two text
features per class name, ``[embed, 2]``.

Encoding is exact and fast (documentation: "Performance"): the text tower is causal, so every distinct token prefix of a
class's sentences is encoded once as a node of a prefix tree (:mod:`.sentence_tree`); block 0 is never prompted, so
its output is cached per class name; the last block computes the end-of-text tokens only. Text features that do not
depend on the image (no text prompts) are cached per class name too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .blocks import is_tracing, residual_attention_block
from .prompting import PromptEnsemble
from .sentence_tree import SentenceTree, build_sentence_tree, pad_sentence_tree

__all__ = ["PromptedTextEncoder"]


def _outside_inference_mode() -> contextlib.AbstractContextManager:
    """Leave ``torch.inference_mode`` for tensors that are cached and later used where autograd records."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


class PromptedTextEncoder:
    """CLIP's frozen text tower with AdaCLIP's prompt insertion, prefix trees and caches.

    A plain object, not a module: it uses the CLIP that the model owns (and moves between devices), so the model's
    state dict keeps its keys.

    Args:
        clip: The frozen open_clip CLIP.
        ensemble: The sentences of a class name.
        prompting_depth: Prompted blocks (prompts overwrite the tokens after the start token before blocks
            1 .. depth-1).
        prompting_length: Prompt tokens.
        prompted: Whether the text branch is prompted at all.
    """

    def __init__(
        self, clip: CLIP, ensemble: PromptEnsemble, prompting_depth: int, prompting_length: int, prompted: bool
    ) -> None:
        self.clip = clip
        self.ensemble = ensemble
        self.prompting_depth = prompting_depth
        self.prompting_length = prompting_length
        self.prompted = prompted
        self.tokenizer = SimpleTokenizer(context_length=int(clip.context_length))
        self._tree_cache: dict[tuple, SentenceTree] = {}
        self._text_cache: dict[tuple, torch.Tensor] = {}
        self._first_block_cache: dict[tuple, torch.Tensor] = {}
        self._checked_class_names: set[str] = set()

    def clear_caches(self) -> None:
        """Forget cached text states (after the trainable tensors change)."""
        self._text_cache.clear()
        self._first_block_cache.clear()

    def _cache_key(self, name: str, device: torch.device) -> tuple:
        """Key of a cached text tensor: the class name and everything that changes its numbers."""
        autocast = torch.is_autocast_enabled(device.type)
        dtype = self.clip.token_embedding.weight.dtype
        return (name, device, dtype, torch.get_autocast_dtype(device.type) if autocast else None)

    def _sentence_tree(self, class_name: str, device: torch.device) -> SentenceTree:
        """The prefix tree of a class name's sentences on ``device`` (built once per class name and device)."""
        shared = self.prompting_length if self.prompted and self.prompting_depth > 1 else 0
        key = (class_name, device, shared)
        if key not in self._tree_cache:
            normal, abnormal = self.ensemble.sentences(class_name)
            # Normal tensors even when first needed under torch.inference_mode (validation): training reuses them.
            with _outside_inference_mode():
                tree = build_sentence_tree(self.tokenizer(normal + abnormal), shared)
                self._tree_cache[key] = SentenceTree(*(tensor.to(device) for tensor in tree))
        return self._tree_cache[key]

    def _first_block(self, class_name: str, tree: SentenceTree) -> torch.Tensor:
        """Output of text block 0 at every node of the class's token tree, ``[N0, width]`` (cached).

        Block 0 is never prompted, so its output depends on the class name only.
        """
        key = self._cache_key(class_name, tree.tokens.device)
        cached = self._first_block_cache.get(key)
        if cached is None:
            with _outside_inference_mode(), torch.no_grad():
                x = self.clip.token_embedding(tree.tokens)
                x = x + self.clip.positional_embedding[tree.positions].to(x.dtype)
                cached = residual_attention_block(self.clip.transformer.resblocks[0], x[None], tree.mask)[0]
            if not is_tracing():
                self._first_block_cache[key] = cached
        return cached

    def encode(self, names: Sequence[str], prompts: torch.Tensor | None) -> torch.Tensor:
        """Encode the sentences of G class names into normalised embeddings ``[G, S, embed]``.

        Prompts ``[depth, G or 1, length, width]`` overwrite the positions right after the start token before blocks
        1 .. depth-1 (block 0 is left untouched, as in the reference); the same prompts serve all S sentences. One
        name serves every prompt group (then G is the prompts' group count, which may be the batch size of an export).

        Every distinct token prefix of a class's sentences is encoded once (see :func:`build_sentence_tree`): the
        tower is causal, so a token's state depends only on the tokens before it, which the tree's mask gives it.
        Block 0 is taken from a per-class cache, and the last block computes the end-of-text tokens only.
        """
        device = self.clip.token_embedding.weight.device
        unique = list(dict.fromkeys(names))
        if len(unique) > 1 and device.type == "cpu" and not is_tracing():
            return self._encode_per_class(names, prompts)
        # Exact: in a causal tower equal prefixes have equal states, and the mask shows each node its own prefix.
        trees = {name: self._sentence_tree(name, device) for name in unique}
        firsts = {name: self._first_block(name, tree)[tree.sources] for name, tree in trees.items()}
        groups = prompts.shape[1] if prompts is not None and len(names) == 1 else len(names)
        if len(unique) == 1:
            tree = trees[unique[0]]
            x = firsts[unique[0]].expand(groups, -1, -1)
            mask, ends = tree.later_mask, tree.ends.expand(groups, -1)
        else:  # pad every class's tree to the largest; padding nodes attend to themselves only
            n_nodes = max(len(tree.sources) for tree in trees.values())
            padded = {name: pad_sentence_tree(trees[name], firsts[name], n_nodes) for name in unique}
            x = torch.stack([padded[name][0] for name in names])
            mask = torch.stack([padded[name][1] for name in names]).unsqueeze(1)
            ends = torch.stack([trees[name].ends for name in names])
        blocks = self.clip.transformer.resblocks
        length = self.prompting_length
        if len(blocks) == 1:
            x = x.gather(1, ends.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        for index in range(1, len(blocks)):
            if prompts is not None and index < self.prompting_depth:
                block_prompts = prompts[index].to(x.dtype).expand(groups, -1, -1)
                x = torch.cat([x[:, :1], block_prompts, x[:, 1 + length :]], dim=1)
            # Only the end-of-text tokens are pooled; they still attend to their whole prefix, so this is exact.
            rows = ends if index == len(blocks) - 1 else None
            x = residual_attention_block(blocks[index], x, mask, rows=rows)
        x = self.clip.ln_final(x)
        projection = self.clip.text_projection
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        return F.normalize(x.float(), dim=-1)

    def _encode_per_class(self, names: Sequence[str], prompts: torch.Tensor | None) -> torch.Tensor:
        """:meth:`encode` one class name at a time (CPU): an image's numbers then do not depend on the others.

        Padding a class's token tree to a larger one (several names in one batch) lengthens the attention's sums, and
        the CPU kernels then add in another order.
        """
        per_group = prompts is not None and prompts.shape[1] == len(names) > 1
        order: list[int] = []
        pieces = []
        for name in dict.fromkeys(names):
            indices = [index for index, other in enumerate(names) if other == name]
            if per_group:
                pieces.append(self.encode([name] * len(indices), prompts[:, indices]))
            else:
                pieces.append(self.encode([name], prompts).expand(len(indices), -1, -1))
            order += indices
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(pieces)[inverse.to(pieces[0].device)]

    def features(self, names: Sequence[str], prompts: torch.Tensor | None) -> torch.Tensor:
        """Text features ``[G, embed, 2]`` for G class names (one per prompt group)."""
        embeddings = self.encode(names, prompts)
        n_normal = len(self.ensemble.normal_states) * len(self.ensemble.templates)
        normal = F.normalize(embeddings[:, :n_normal].mean(1), dim=-1)
        abnormal = F.normalize(embeddings[:, n_normal:].mean(1), dim=-1)
        return torch.stack([normal, abnormal], dim=-1)

    def unprompted_features(self, names: Sequence[str]) -> torch.Tensor:
        """Text features ``[G, embed, 2]`` without prompts: they depend on the class name only, so they are cached."""
        device = self.clip.token_embedding.weight.device
        key_of = {name: self._cache_key(name, device) for name in names}
        cached = {} if is_tracing() else self._text_cache
        missing = [name for name in dict.fromkeys(names) if key_of[name] not in cached]
        if missing:
            with torch.no_grad():
                features = self.features(missing, None)
            cached.update({key_of[name]: feature for name, feature in zip(missing, features, strict=True)})
        return torch.stack([cached[key_of[name]] for name in names])

    def check_class_name(self, class_name: str) -> None:
        """Refuse a class name the prompts cannot use: empty, or too long for the text tower's context.

        Any other string works: dashes become spaces, underscores, digits and non-ASCII characters stay (CLIP's
        tokenizer lower-cases the text and splits it into byte-level BPE tokens).

        Raises:
            ValueError: The name is empty or blank, or one of its sentences would not fit into the context (the
                tokenizer would cut the end off, and with it the state words that tell normal from abnormal).
        """
        if class_name in self._checked_class_names:
            return
        if not isinstance(class_name, str) or not class_name.strip():
            msg = f"A class name must be a non-empty string, got {class_name!r}."
            raise ValueError(msg)
        context = self.tokenizer.context_length
        normal, abnormal = self.ensemble.sentences(class_name)
        longest = max(len(self.tokenizer.encode(sentence)) for sentence in normal + abnormal) + 2
        if longest > context:
            name_tokens = len(self.tokenizer.encode(class_name))
            msg = (
                f"The class name {class_name[:60]!r}{'...' if len(class_name) > 60 else ''} is too long: it is "
                f"{name_tokens} tokens, and its longest prompt sentence {longest} tokens with start and end, but the "
                f"text tower reads {context}. Use at most {name_tokens - (longest - context)} tokens (a few words)."
            )
            raise ValueError(msg)
        self._checked_class_names.add(class_name)
