"""The frozen CLIP of AdaCLIP: building it with open_clip, resolving its weights, resizing its positions.

One factory, :func:`create_clip`, turns a backbone (an open_clip model name or config dict), a weights source and an
input size into a frozen open_clip ``CLIP``:

- the model is always built with exact ``nn.GELU``, as the reference does (its JSON configs have no
  ``quick_gelu``), also for OpenAI weights that were trained with QuickGELU;
- the weights come from a pretrained tag of open_clip's registry (``"openai"``: Hugging Face cache, downloaded when
  missing), a local file (OpenAI TorchScript ``.pt``, ``.pt``/``.pth``/``.bin`` state dict, ``.safetensors``), a
  state dict, or ``None`` (random, for tests only);
- the vision positional embedding is resized to the input grid with plain bicubic interpolation
  (open_clip's ``resize_pos_embed`` with ``antialias=False``: the reference does not antialias), the CLS position kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP, resize_pos_embed

from anomalib_adaclip.config import AdaCLIPConfig
from anomalib_adaclip.weights import check_state_dict, download_clip_weights, load_state_dict_file
from anomalib_adaclip.weights.loading import WEIGHT_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "BackboneWeights",
    "backbone_config",
    "create_clip",
    "load_backbone_weights",
    "resize_vision_positional_embedding",
]

BackboneWeights = str | Path | Mapping[str, torch.Tensor] | None

_CLIP_ARGUMENTS = (
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "init_logit_scale",
    "init_logit_bias",
    "nonscalar_logit_scale",
)


def backbone_config(backbone: str | Mapping[str, Any]) -> dict[str, Any]:
    """Return the open_clip config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of a ViT CLIP backbone.

    Args:
        backbone: An open_clip model name (``"ViT-L-14-336"``, ``"ViT-B-16"``, ...) or a config dict.

    Returns:
        A deep copy of the config with ``vision_cfg`` and ``text_cfg`` as plain dicts.

    Raises:
        ValueError: Unknown name, incomplete dict, or a backbone AdaCLIP cannot prompt (ResNet, timm or Hugging Face
            towers, custom text towers).
    """
    if isinstance(backbone, str):
        config = open_clip.get_model_config(backbone)
        if config is None:
            vit_names = [name for name in open_clip.list_models() if name.startswith("ViT-")]
            msg = f"Unknown open_clip model {backbone!r}. Known ViT models include: {', '.join(vit_names[:12])}, ..."
            raise ValueError(msg)
        name = backbone
    elif isinstance(backbone, Mapping):
        config = deepcopy(dict(backbone))
        name = "the backbone config"
        missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
        if missing:
            msg = f"A backbone config dict needs 'embed_dim', 'vision_cfg' and 'text_cfg'; missing {missing}."
            raise ValueError(msg)
    else:
        msg = f"`backbone` must be an open_clip model name or a config dict, got {type(backbone).__name__}."
        raise TypeError(msg)
    vision, text = dict(config["vision_cfg"]), dict(config["text_cfg"])
    if vision.get("timm_model_name") or not isinstance(vision.get("layers", 12), int):
        msg = f"AdaCLIP needs an open_clip ViT vision tower; {name} has a timm or ResNet vision tower."
        raise ValueError(msg)
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok" or vision.get("final_ln_after_pool"):
        msg = f"AdaCLIP needs a ViT pooled at the class token (ln_post, then proj); {name} pools differently."
        raise ValueError(msg)
    if text.get("hf_model_name") or config.get("custom_text"):
        msg = f"AdaCLIP needs the standard CLIP text transformer; {name} has a custom or Hugging Face text tower."
        raise ValueError(msg)
    if text.get("embed_cls") or text.get("no_causal_mask") or text.get("pool_type", "argmax") != "argmax":
        msg = f"AdaCLIP needs a causal CLIP text tower pooled at the end-of-text token; {name} is different."
        raise ValueError(msg)
    config["vision_cfg"], config["text_cfg"] = vision, text
    return config


def _patch_size(config: Mapping[str, Any]) -> int:
    patch = config["vision_cfg"].get("patch_size", 16)
    return int(patch[0] if isinstance(patch, list | tuple) else patch)


def _native_image_size(config: Mapping[str, Any]) -> int:
    size = config["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)


def resize_vision_positional_embedding(
    positional_embedding: torch.Tensor, grid_size: int, *, antialias: bool = False
) -> torch.Tensor:
    """Resize a ``[1 + g*g, width]`` vision positional embedding to a ``grid_size`` x ``grid_size`` grid.

    open_clip's ``resize_pos_embed``, bicubic with ``align_corners=False``; by default with antialiasing off, as
    AdaCLIP's reference (open_clip's default antialiases, which changes the values by up to 0.34, also when
    upsampling: torch's antialiased bicubic kernel is another one); RareCLIP's code keeps open_clip's default
    (``antialias=True``). The CLS position is kept as it is.
    """
    old_grid = round((positional_embedding.shape[0] - 1) ** 0.5)
    if old_grid * old_grid + 1 != positional_embedding.shape[0]:
        msg = f"Cannot resize a positional embedding of {positional_embedding.shape[0]} tokens: not 1 + a square grid."
        raise ValueError(msg)
    # resize_pos_embed reads the target grid from a model and resizes a state dict in place.
    state_dict = {"visual.positional_embedding": positional_embedding.float()}
    target = SimpleNamespace(visual=SimpleNamespace(grid_size=(grid_size, grid_size)))
    resize_pos_embed(state_dict, target, interpolation="bicubic", antialias=antialias)
    return state_dict["visual.positional_embedding"].to(positional_embedding.dtype)


def _looks_like_path(weights: str) -> bool:
    return weights.endswith(WEIGHT_SUFFIXES) or os.sep in weights or "/" in weights or Path(weights).exists()


def load_backbone_weights(weights: BackboneWeights, backbone: str | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Resolve a weights source to a CLIP state dict (open_clip / OpenAI key layout).

    Args:
        weights: A pretrained tag of open_clip's registry for the named backbone (``"openai"``), a path to a weights
            file, or a state dict.
        backbone: The backbone, to look tags up by its model name.

    Returns:
        The state dict.

    Raises:
        WeightsNotFoundError: A tag whose weights are neither cached nor downloadable.
        FileNotFoundError: A path that does not exist.
        CheckpointError: A file that cannot be read safely.
    """
    if weights is None:
        msg = "No weights to load: backbone_weights is None (random initialisation)."
        raise ValueError(msg)
    if isinstance(weights, Mapping):
        return dict(weights)
    if isinstance(weights, Path) or _looks_like_path(str(weights)):
        return load_state_dict_file(weights)
    if not isinstance(backbone, str):
        msg = (
            f"backbone_weights={weights!r} is a pretrained tag, which needs a backbone given by name; for a config "
            f"dict, pass a path to a weights file or a state dict."
        )
        raise ValueError(msg)
    return load_state_dict_file(download_clip_weights(backbone, str(weights)))


def create_clip(
    backbone: str | Mapping[str, Any] = AdaCLIPConfig.backbone,
    weights: BackboneWeights = "openai",
    image_size: int | None = None,
    *,
    vision_only: bool = False,
    antialias_positions: bool = False,
) -> CLIP:
    """Build the frozen open_clip CLIP of AdaCLIP.

    Args:
        backbone: An open_clip ViT model name or a config dict with ``embed_dim``, ``vision_cfg`` and ``text_cfg``.
        weights: A pretrained tag (``"openai"``), a path to a weights file, a state dict, or ``None`` for random
            weights (meaningless scores; tests only). Weights may come at the config's native image size or already
            at ``image_size``.
        image_size: Input side length; the vision positional embedding is resized to its patch grid. Defaults to
            the config's native size.
        vision_only: Only the vision tower will be used (the mutual scoring): the weights need only its ``visual.*``
            keys (others are ignored) and the text tower keeps its random initialisation.
        antialias_positions: Resize the positional embedding with open_clip's default antialiasing (RareCLIP's
            code does; AdaCLIP's and this default do not).

    Returns:
        The CLIP in eval mode with ``requires_grad`` off everywhere.
    """
    config = backbone_config(backbone)
    patch = _patch_size(config)
    image_size = image_size or _native_image_size(config)
    if image_size <= 0 or image_size % patch:
        msg = f"image_size must be a positive multiple of the backbone's patch size {patch}, got {image_size}."
        raise ValueError(msg)
    # Resolve the weights before building anything, so that missing weights fail at once.
    state_dict = None if weights is None else load_backbone_weights(weights, backbone)
    if config.pop("quick_gelu", False):
        logger.info("Building the backbone with exact GELU (as AdaCLIP's reference does), not QuickGELU.")
    model = CLIP(**{key: config[key] for key in _CLIP_ARGUMENTS if key in config}, quick_gelu=False)
    grid = image_size // patch
    visual = model.visual
    visual.positional_embedding = torch.nn.Parameter(
        resize_vision_positional_embedding(visual.positional_embedding.data, grid, antialias=antialias_positions),
    )
    visual.image_size, visual.grid_size = (image_size, image_size), (grid, grid)

    if state_dict is None:
        logger.warning(
            "AdaCLIP backbone built with RANDOM weights (backbone_weights=None): its scores are meaningless. "
            "Use backbone_weights='openai' or a weights file for real results.",
        )
    else:
        if "visual.positional_embedding" in state_dict:
            state_dict["visual.positional_embedding"] = resize_vision_positional_embedding(
                state_dict["visual.positional_embedding"], grid, antialias=antialias_positions
            )
        source = f"The backbone weights ({weights})" if isinstance(weights, str | Path) else "The backbone state dict"
        if vision_only:
            prefix = "visual."
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
            expected = model.visual.state_dict()
            check_state_dict(
                {prefix + key: value for key, value in expected.items()},
                {prefix + key: value for key, value in state_dict.items()},
                source,
            )
            model.visual.load_state_dict(state_dict)
        else:
            check_state_dict(model.state_dict(), state_dict, source)
            model.load_state_dict(state_dict)
    model.requires_grad_(False)
    return model.eval()
