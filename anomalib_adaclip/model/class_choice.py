"""Each image's class name chosen among several by CLIP's own zero-shot classification (multi-class exports).

An export serves a line of products when it carries several class names: every image is scored with the prompts of
the class name CLIP finds closest to it. anomalib's inferencers call an exported model with the image only
(``OpenVINOInferencer`` feeds its first input, ``TorchInferencer`` calls ``model(image)``), so the choice is made
inside the model, from the image:

- each candidate's *class prototype* is the normalised sum of its un-prompted normal and abnormal text features
  (the mean embeddings of its 28 "flawless/perfect/... {name}" and 20 "damaged/broken/... {name}" sentences): a
  prompt ensemble that names the object whatever its state, as CLIP's zero-shot classification uses;
- an image's class is the prototype with the largest cosine to its un-prompted CLIP image embedding (ties go to the
  first candidate), computed with ``argmax``, which exports to ONNX and OpenVINO as it runs in torch.

The text features of every candidate are then computed (with the image's dynamic prompts, if any) and each image
takes its own class's through :func:`select_per_image`, an exact gather: the result is, number for number, what the
model gives when the chosen class name is passed to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["check_candidates", "choose_classes", "class_prototypes", "select_per_image"]


def check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    """The candidate class names as a tuple: strings, at least one, none twice.

    Raises:
        TypeError: ``candidates`` is a single string or holds something else than strings.
        ValueError: No candidate, or a name given twice.
    """
    if isinstance(candidates, str):
        msg = f"The candidate class names must be a list of names, got the string {candidates!r}; use [{candidates!r}]."
        raise TypeError(msg)
    names = tuple(candidates)
    if not names:
        msg = "Give at least one candidate class name."
        raise ValueError(msg)
    if not all(isinstance(name, str) for name in names):
        msg = f"Every candidate class name must be a string, got {list(names)!r}."
        raise TypeError(msg)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        msg = f"Candidate class names must differ; given more than once: {repeated}."
        raise ValueError(msg)
    return names


def class_prototypes(unprompted_text_features: torch.Tensor) -> torch.Tensor:
    """Normalised class prototypes ``[C, D]`` from un-prompted normal/abnormal text features ``[C, D, 2]``."""
    return F.normalize(unprompted_text_features.float().sum(-1), dim=-1)


def choose_classes(image_embedding: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index ``[B]`` of the prototype closest (cosine) to each un-prompted image embedding ``[B, D]``."""
    image = F.normalize(image_embedding.float(), dim=-1)
    return (image @ prototypes.T).argmax(dim=-1)


def select_per_image(per_class: Sequence[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Each image's row of its chosen class: ``per_class[index[b]][b]`` for every image ``b``.

    Args:
        per_class: One tensor ``[B, ...]`` per candidate class, all of one shape.
        index: The chosen class of every image, ``[B]``.

    Returns:
        ``[B, ...]``, gathered exactly (no arithmetic on the values).
    """
    stacked = torch.stack(list(per_class))  # [C, B, ...]
    shape = (1, stacked.shape[1], *([1] * (stacked.ndim - 2)))
    return stacked.gather(0, index.view(shape).expand(1, *stacked.shape[1:]))[0]
