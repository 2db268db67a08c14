"""Prompts of AdaCLIP: the text prompt ensemble and the learnable prompt layers.

AdaCLIP describes the two anomaly states with an ensemble of sentences (7 normal and 5 abnormal state words, each
put in 4 templates) and adapts CLIP with *hybrid* learnable prompts:

- static prompts, ``prompting_depth`` matrices of ``prompting_length x width`` shared by all images;
- dynamic prompts, generated per image by ``prompting_length`` independent linear layers from the image embedding
  of a frozen, un-prompted CLIP pass, and added to the static prompts of every prompted block.

The module and parameter names (``static_prompts``, ``head``) follow the released checkpoints, so that their keys
load without renaming.

Example:
    >>> from anomalib_adaclip.model.prompting import PromptEnsemble
    >>> ensemble = PromptEnsemble()
    >>> normal, abnormal = ensemble.sentences("metal-nut")
    >>> normal[4]
    'a bad photo of a flawless metal nut.'
    >>> len(normal), len(abnormal)
    (28, 20)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from anomalib_adaclip.config import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, AdaCLIPConfig, check_phrases

__all__ = [
    "DynamicPromptGenerator",
    "LinearHeads",
    "PromptEnsemble",
    "StaticPrompts",
    "format_class_name",
    "sentences_text",
]


def format_class_name(class_name: str) -> str:
    """Return the object name as the prompts use it.

    The reference replaces dashes by spaces and keeps underscores (``"metal_nut"`` stays ``"metal_nut"``).

    Args:
        class_name: Class name as given by the user or the data module.

    Returns:
        The name placed into the state words.
    """
    return class_name.replace("-", " ")


@dataclass(frozen=True)
class PromptEnsemble:
    """The sentences that describe a normal and an abnormal object.

    Each state word holds a ``{}`` for the object name, each template a ``{}`` for the state word. The sentences of
    a state are ``template.format(state.format(name))`` for every state (outer loop) and template (inner loop).

    Args:
        normal_states: State words of a normal object. Defaults to the paper's seven.
        abnormal_states: State words of an abnormal object. Defaults to the paper's five.
        templates: Sentence templates. Defaults to the paper's four.
    """

    normal_states: tuple[str, ...] = field(default=NORMAL_STATES)
    abnormal_states: tuple[str, ...] = field(default=ABNORMAL_STATES)
    templates: tuple[str, ...] = field(default=TEMPLATES)

    def __post_init__(self) -> None:
        """Validate the phrases and store them as tuples."""
        for name in ("normal_states", "abnormal_states", "templates"):
            object.__setattr__(self, name, check_phrases(getattr(self, name), name))

    @classmethod
    def of(cls, config: AdaCLIPConfig) -> PromptEnsemble:
        """The ensemble of a model configuration."""
        return cls(config.normal_states, config.abnormal_states, config.templates)

    def sentences(self, class_name: str) -> tuple[list[str], list[str]]:
        """Return the normal and the abnormal sentences for one object name.

        Args:
            class_name: The object name; dashes become spaces.

        Returns:
            The normal sentences and the abnormal sentences.
        """
        name = format_class_name(class_name)
        return (
            [template.format(state.format(name)) for state in self.normal_states for template in self.templates],
            [template.format(state.format(name)) for state in self.abnormal_states for template in self.templates],
        )


def sentences_text(config: AdaCLIPConfig, class_name: str) -> str:
    """The prompt sentences of a class name as ``anomalib-adaclip prompts`` prints them.

    Args:
        config: The model settings whose sentence lists are used.
        class_name: The class name.

    Returns:
        A header line, then the normal and the abnormal sentences, one per line.
    """
    origin = "the paper's prompts" if config.uses_paper_prompts else "own prompts (not the paper's)"
    normal, abnormal = PromptEnsemble.of(config).sentences(class_name)
    return "\n".join(
        [
            f"# class name {class_name!r} -> prompt text {format_class_name(class_name)!r}; {origin}",
            f"normal ({len(normal)} sentences):",
            *(f"  {sentence}" for sentence in normal),
            f"abnormal ({len(abnormal)} sentences):",
            *(f"  {sentence}" for sentence in abnormal),
        ]
    )


class StaticPrompts(nn.Module):
    """Static prompts of one branch: ``depth`` learnable matrices of ``length x width``, initialised N(0, 0.02).

    Args:
        depth: Number of prompted transformer blocks.
        length: Number of prompt tokens.
        width: Token width of the branch.
    """

    def __init__(self, depth: int, length: int, width: int) -> None:
        super().__init__()
        self.static_prompts = nn.ParameterList(
            [nn.Parameter(torch.empty(length, width).normal_(std=0.02)) for _ in range(depth)],
        )


class LinearHeads(nn.Module):
    """Independent linear layers kept in a ``head`` list (the layout of the released checkpoints).

    Args:
        count: Number of linear layers.
        in_features: Input width of each layer.
        out_features: Output width of each layer.
    """

    def __init__(self, count: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.head = nn.ModuleList([nn.Linear(in_features, out_features) for _ in range(count)])


class DynamicPromptGenerator(LinearHeads):
    """Generate ``length`` prompt tokens per image, one linear layer per token, from the image embedding.

    Args:
        length: Number of prompt tokens.
        embed_dim: Width of the CLIP image embedding.
        width: Token width of the prompted branch.
    """

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """Map image embeddings ``[B, embed_dim]`` to dynamic prompts ``[B, length, width]``."""
        return torch.stack([layer(image_embedding) for layer in self.head], dim=1)
