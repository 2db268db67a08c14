"""PyTorch model of AdaCLIP: CLIP with hybrid (static + dynamic) learnable prompts.

The model computes what the authors' implementation computes (Cao et al., ECCV 2024, arXiv:2407.15795; the code at
github.com/caoyunkang/AdaCLIP) and returns anomalib's :class:`~anomalib.data.InferenceBatch` in eval mode:

1. A frozen, un-prompted pass of the CLIP vision tower gives each image's embedding; the dynamic prompt generators
   turn it into per-image prompts, which are added to the static prompts of every prompted block.
2. The prompted vision tower yields patch tokens of the feature layers and the image embedding; the prompted text
   tower encodes 28 normal and 20 abnormal sentences into two text features per image.
3. Per feature layer, the projected patch tokens are compared with the text features (``100 * cos``); the test-time
   anomaly map is the softmax of the mean layer logits, upsampled and blurred (sigma 4).
4. The image score fuses the projected image embedding with the Hybrid Semantic Fusion of the most abnormal patches
   (:mod:`.hsf`) and compares it with the text features.
5. Few-shot (``k_shot > 0``, :mod:`.few_shot`): the frozen pass's projected patch tokens are compared with a memory
   of normal reference patches; the scaled few-shot map is fused with the zero-shot map, and its maximum with the
   zero-shot image score. Without references (``k_shot=0``) nothing of this runs.
6. Several class names (``choose_from``, multi-class exports, :mod:`.class_choice`): each image's class is chosen by
   CLIP's zero-shot classification of its un-prompted embedding against the candidates, and it is scored with that
   class's prompts, exactly as if the name had been passed.

Unlike the reference, any batch size works, with exact shortcuts (docs: "Performance"): the sentences of all images
are encoded in one batch as a prefix tree of their tokens (:mod:`.text_encoder`: the text tower is causal, so each
distinct prefix is encoded once; block 0 is cached per class name), the text features are computed once per class
name whenever they do not depend on the image, attention runs through ``scaled_dot_product_attention``, and the
frozen pass computes only the CLS token in its last block. Under ``torch.autocast`` the towers run in the low
precision while cosines, softmaxes, HSF, upsampling and blur stay in fp32.

Example:
    >>> import torch
    >>> from anomalib_adaclip import AdaCLIPModel
    >>> tiny = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 4, "width": 128, "head_width": 32,
    ...         "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4,
    ...         "layers": 4}}
    >>> model = AdaCLIPModel(backbone=tiny, backbone_weights=None, image_size=224).eval()
    >>> out = model(torch.randn(2, 3, 224, 224), ["bottle", "metal_nut"])
    >>> out.pred_score.shape, out.anomaly_map.shape
    (torch.Size([2]), torch.Size([2, 224, 224]))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.profiler import record_function

from anomalib_adaclip.config import DEFAULT_CLASS_NAME, AdaCLIPConfig, FewShotConfig
from anomalib_adaclip.weights import check_state_dict, read_checkpoint

from .backbone import BackboneWeights, backbone_config, create_clip
from .blocks import full_precision, per_image
from .blur import GaussianBlur
from .class_choice import check_candidates, choose_classes, class_prototypes, select_per_image
from .few_shot import FewShotMemory
from .hsf import hybrid_semantic_fusion
from .inputs import check_images, image_class_names
from .loss import adaclip_loss
from .mutual_scoring import PlainTokens, unit_embedding
from .prompting import (
    DynamicPromptGenerator,
    LinearHeads,
    PromptEnsemble,
    StaticPrompts,
)
from .text_encoder import PromptedTextEncoder
from .vision import vision_forward

logger = logging.getLogger(__name__)

__all__ = ["AdaCLIPFeatures", "AdaCLIPModel", "AdaCLIPTrainOutput"]

LOGIT_SCALE = 100.0
HSF_WEIGHT = 0.2


class AdaCLIPTrainOutput(NamedTuple):
    """Training-mode output of :class:`AdaCLIPModel`.

    Attributes:
        layer_maps: Softmax maps of every feature layer, ``[B, n_layers, 2, H, W]`` (channel 1 = abnormal).
        image_probs: Normal/abnormal probabilities of the image, ``[B, 2]``.
    """

    layer_maps: torch.Tensor
    image_probs: torch.Tensor


class AdaCLIPFeatures(NamedTuple):
    """Everything AdaCLIP computes for a batch before maps and scores are formed.

    Attributes:
        text_features: Normal/abnormal text features per image, ``[B, D, 2]``.
        image_features: Projected, normalised image embedding of the prompted pass (``proj_cls``), ``[B, D]``.
        patch_tokens: Projected, normalised patch tokens of every feature layer, ``[B, n_layers, L, D]``.
        layer_logits: ``100 * cos`` of patch tokens and text features on the patch grid, ``[B, n_layers, 2, g, g]``.
        few_shot_map: Scaled few-shot values on the patch grid, ``[B, g, g]`` in [0, 1), or ``None`` without
            references (:mod:`.few_shot`).
    """

    text_features: torch.Tensor
    image_features: torch.Tensor
    patch_tokens: torch.Tensor
    layer_logits: torch.Tensor
    few_shot_map: torch.Tensor | None = None


class AdaCLIPModel(nn.Module):
    """AdaCLIP: zero-shot anomaly detection with a hybrid-prompted, frozen CLIP.

    Args:
        config: The hyper-parameters (:class:`~anomalib_adaclip.config.AdaCLIPConfig`). Defaults to the paper's.
        backbone_weights: CLIP weights: a pretrained tag of open_clip (``"openai"``, downloaded and cached), a path to
            a weights file, a state dict (at the config's native image size or at ``image_size``), or ``None`` for
            random weights (tests only: the scores mean nothing). Defaults to ``"openai"``.
        checkpoint: AdaCLIP's trained tensors: a released name (``"mvtec_colondb"``, ``"visa_clinicdb"``, ``"all"``),
            a path, or a state dict in the released (``clip_model.``) or our layout. ``None`` keeps the random
            initialisation of the prompts and projections.
        class_name: Object name used when ``forward`` gets no class names (e.g. in exported models). Defaults to
            ``"object"``.
        few_shot: The few-shot settings (:class:`~anomalib_adaclip.config.FewShotConfig`). With ``k_shot > 0`` the
            model has a :class:`~anomalib_adaclip.model.few_shot.FewShotMemory` (``few_shot_memory``), filled by
            :meth:`add_references`. Defaults to zero-shot.
        **hyperparameters: Fields of :class:`~anomalib_adaclip.config.AdaCLIPConfig` that replace the config's, e.g.
            ``AdaCLIPModel(backbone="ViT-B-16", image_size=224)``.

    Raises:
        ValueError: An unknown or invalid hyper-parameter.
    """

    def __init__(
        self,
        config: AdaCLIPConfig | None = None,
        *,
        backbone_weights: BackboneWeights = "openai",
        checkpoint: str | Path | Mapping[str, Any] | None = None,
        class_name: str = DEFAULT_CLASS_NAME,
        few_shot: FewShotConfig | None = None,
        **hyperparameters: Any,
    ) -> None:
        super().__init__()
        config = config or AdaCLIPConfig()
        if hyperparameters:
            config = config.replace(**hyperparameters)
        clip_config = backbone_config(config.backbone)
        n_vision_blocks = int(clip_config["vision_cfg"].get("layers", 12))
        config.check_backbone(n_vision_blocks, int(clip_config["text_cfg"].get("layers", 12)))
        # The saved configuration names the feature layers and the backbone it ran with, also where defaults gave them.
        self.config = config.replace(
            backbone=config.backbone if isinstance(config.backbone, str) else clip_config,
            feature_layers=list(config.resolved_feature_layers(n_vision_blocks)),
        )
        self.ensemble = PromptEnsemble.of(self.config)
        self.image_size = self.config.image_size
        self.feature_layers = list(self.config.feature_layers)
        self.prompting_depth = self.config.prompting_depth
        self.prompting_length = self.config.prompting_length
        self.use_hsf = self.config.use_hsf
        self.k_clusters = self.config.k_clusters
        self.class_name = class_name

        self.clip = create_clip(config.backbone, backbone_weights, image_size=self.image_size)
        embed_dim = int(clip_config["embed_dim"])
        vision_width = int(clip_config["vision_cfg"].get("width", 768))
        text_width = int(clip_config["text_cfg"].get("width", 512))
        self.prompt_vision = "V" in self.config.prompting_branch
        self.prompt_text = "L" in self.config.prompting_branch
        static, dynamic = "S" in self.config.prompting_type, "D" in self.config.prompting_type
        depth, length = self.prompting_depth, self.prompting_length
        self.visual_prompter = StaticPrompts(depth, length, vision_width) if static and self.prompt_vision else None
        self.text_prompter = StaticPrompts(depth, length, text_width) if static and self.prompt_text else None
        self.dynamic_visual_prompt_generator = (
            DynamicPromptGenerator(length, embed_dim, vision_width) if dynamic and self.prompt_vision else None
        )
        self.dynamic_text_prompt_generator = (
            DynamicPromptGenerator(length, embed_dim, text_width) if dynamic and self.prompt_text else None
        )
        self.patch_token_layer = LinearHeads(len(self.feature_layers), vision_width, embed_dim)
        self.cls_token_layer = LinearHeads(1, embed_dim, embed_dim)
        self.blur = GaussianBlur(sigma=self.config.blur_sigma)
        self.few_shot = few_shot or FewShotConfig()
        self.few_shot_memory = (
            FewShotMemory(len(self.feature_layers), embed_dim, self.few_shot.coreset_ratio)
            if self.few_shot.k_shot > 0
            else None
        )

        self.text_encoder = PromptedTextEncoder(
            self.clip, self.ensemble, self.prompting_depth, self.prompting_length, self.prompt_text
        )
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    # ----------------------------------------------------------------------------------------------------------------
    # Trainable state
    # ----------------------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> AdaCLIPModel:
        """Set the training mode of the prompts and projections; the frozen CLIP always stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors AdaCLIP learns (prompts, generators, projections), without the frozen CLIP and the references."""
        return {
            key: value for key, value in self.state_dict().items() if not key.startswith(("clip.", "few_shot_memory."))
        }

    def parameters_without_gradient(self) -> list[str]:
        """Names of the trainable tensors that never get a gradient (distributed training must be told about them).

        That is the text prompt of block 0: the text branch is prompted from block 1 on, as in the reference.
        """
        return ["text_prompter.static_prompts.0"] if self.text_prompter is not None else []

    def _unused_generator_prefixes(self) -> tuple[str, ...]:
        # The reference builds both generators for dynamic prompting even when a branch is not prompted.
        return tuple(
            f"{name}."
            for name in ("dynamic_visual_prompt_generator", "dynamic_text_prompt_generator")
            if getattr(self, name) is None
        )

    def load_checkpoint(self, checkpoint: str | Path | Mapping[str, Any]) -> None:
        """Load AdaCLIP's trained tensors (released or our layout), checking every key and shape first.

        Args:
            checkpoint: A released name, a path, or a state dict.

        Raises:
            CheckpointError: Missing or unexpected keys, or shapes that do not fit (nothing is loaded then).
        """
        state_dict, stored_config = read_checkpoint(checkpoint)
        source = f"The AdaCLIP checkpoint {checkpoint}" if isinstance(checkpoint, str | Path) else "The checkpoint"
        if stored_config:
            current = self.config.to_dict()
            differing = {
                key: (value, current[key])
                for key, value in stored_config.items()
                if key in current and key != "backbone" and value != current[key]
            }
            if differing:
                logger.warning("%s was saved with other settings (saved, current): %s", source, differing)
        elif not self.config.uses_paper_prompts:
            # The released checkpoints store no settings: their prompts were learned with the paper's sentences.
            logger.warning(
                "AdaCLIP uses its own prompt sentences (normal_states/abnormal_states/templates differ from the "
                "paper's), but %s stores no prompt settings: the released checkpoints were trained with the paper's "
                "sentences, so their learned prompts may not fit these. Check the scores on known-good and defective "
                "parts (`anomalib-adaclip prompts` prints the sentences).",
                source.removeprefix("The ").replace("AdaCLIP checkpoint", "the checkpoint"),
            )
        ignored = self._unused_generator_prefixes()
        check_state_dict(self.trainable_state_dict(), state_dict, source, ignore_unexpected=ignored)
        self.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith(ignored)}, strict=False)
        self.text_encoder.clear_caches()

    # ----------------------------------------------------------------------------------------------------------------
    # Towers
    # ----------------------------------------------------------------------------------------------------------------
    def _block_prompts(
        self,
        static: StaticPrompts | None,
        dynamic: torch.Tensor | None,
        first_block_unused: bool = False,
    ) -> torch.Tensor:
        """Prompts of every prompted block, ``[depth, B or 1, length, width]``: static + dynamic.

        ``first_block_unused`` (the text branch, which is prompted from block 1 on) keeps the first static prompt out
        of autograd: it then gets no gradient at all, as in the reference, rather than a zero gradient that AdamW's
        weight decay would act on.
        """
        if static is not None:
            prompts = list(static.static_prompts)
            if first_block_unused:
                prompts[0] = prompts[0].detach()
            static_prompts = torch.stack(prompts).unsqueeze(1)
        if dynamic is None:
            return static_prompts
        dynamic = dynamic.unsqueeze(0).expand(self.prompting_depth, -1, -1, -1)
        return dynamic if static is None else static_prompts + dynamic

    def _encode_image(
        self,
        images: torch.Tensor,
        prompts: torch.Tensor | None,
        embedding_only: bool = False,
        plain_layers: Sequence[int] = (),
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the vision tower; return the image embedding ``[B, embed]`` and the feature layers' patch tokens.

        Prompt tokens are appended after the CLS and patch tokens before block 0 and replaced before the following
        prompted blocks; they carry no positional embedding. With ``embedding_only`` no patch tokens are kept and the
        last block computes the CLS token only (its keys and values still come from every token, so it is exact).
        ``plain_layers`` (0-based blocks, un-prompted pass only) are kept too and appended after the feature layers'
        tokens, in their order; the embedding and the feature layers' tokens are computed as without them.
        """
        own = () if embedding_only else [layer - 1 for layer in self.feature_layers]
        embedding, tokens = vision_forward(
            self.clip.visual,
            images,
            keep_blocks={*own, *plain_layers},
            prompts=prompts,
            class_row_embedding=embedding_only,
        )
        patch_tokens = [tokens[block] for block in sorted(set(own))]
        return embedding, patch_tokens + [tokens[block] for block in plain_layers]

    @torch.no_grad()
    def _frozen_pass(
        self, images: torch.Tensor, embedding_only: bool, plain_layers: Sequence[int] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor], PlainTokens | None]:
        """The un-prompted pass: embedding, feature layers' tokens (unless ``embedding_only``), and plain tokens."""
        with record_function("adaclip.vision_frozen"):
            extra = list(plain_layers or ())
            embedding, tokens = self._encode_image(images, None, embedding_only, extra)
            cut = len(tokens) - len(extra)
            plain = None if plain_layers is None else PlainTokens(tokens[cut:], unit_embedding(embedding))
            return embedding, tokens[:cut], plain

    def text_features(
        self, class_names: Sequence[str] | str, dynamic_prompts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normal/abnormal text features ``[B, embed, 2]`` of each image's class name.

        Args:
            class_names: One class name per image, or one name for all images (then the features are ``[1, embed, 2]``
                unless they depend on the image).
            dynamic_prompts: Per-image dynamic text prompts ``[B, length, width]`` (when the text branch has them).
        """
        if isinstance(class_names, str):
            class_names = [class_names]
        if not self.prompt_text:
            return self.text_encoder.unprompted_features(class_names)
        if dynamic_prompts is None:
            # Static prompts only: the features depend on the class name, not on the image.
            unique = list(dict.fromkeys(class_names))
            prompts = self._block_prompts(self.text_prompter, None, first_block_unused=True)
            features = self.text_encoder.features(unique, prompts)
            return torch.stack([features[unique.index(name)] for name in class_names])
        prompts = self._block_prompts(self.text_prompter, dynamic_prompts, first_block_unused=True)
        return self.text_encoder.features(list(class_names), prompts)

    def check_class_name(self, class_name: str) -> None:
        """Refuse a class name the prompts cannot use (empty, or too long for the context); see the text encoder.

        Raises:
            ValueError: The name is empty or blank, or one of its sentences would not fit into the context.
        """
        self.text_encoder.check_class_name(class_name)

    # ----------------------------------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------------------------------
    def _check_inputs(
        self, images: torch.Tensor, class_names: Sequence[str] | str | None, choose_from: Sequence[str] | None = None
    ) -> list[str] | str | tuple[str, ...]:
        """The class names to use: per image, one for all, or the candidates to choose from (a tuple)."""
        check_images(images, image_size=self.image_size)
        if choose_from is not None:
            if class_names is not None:
                msg = "Give class_names (known classes) or choose_from (candidates chosen per image), not both."
                raise ValueError(msg)
            candidates = check_candidates(choose_from)
            for name in candidates:
                self.check_class_name(name)
            return candidates
        names = image_class_names(class_names, images.shape[0])
        names = self.class_name if names is None else names
        for name in [names] if isinstance(names, str) else dict.fromkeys(names):
            self.check_class_name(name)
        return names

    def features(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | str | None = None,
        *,
        choose_from: Sequence[str] | None = None,
    ) -> AdaCLIPFeatures:
        """Compute text features, image features, patch tokens and the per-layer logits of a batch.

        Args:
            images: Normalised images ``[B, 3, image_size, image_size]``.
            class_names: One class name per image, one name for all, or ``None`` for ``self.class_name``.
            choose_from: Candidate class names instead: each image's class is chosen among them by CLIP's zero-shot
                classification (:mod:`.class_choice`).
        """
        return self._features(images, class_names, choose_from)[0]

    def _features(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | str | None,
        choose_from: Sequence[str] | None,
        plain_layers: Sequence[int] | None = None,
    ) -> tuple[AdaCLIPFeatures, PlainTokens | None]:
        """:meth:`features`, and with ``plain_layers`` also the plain tokens of those blocks from the frozen pass."""
        names = self._check_inputs(images, class_names, choose_from)
        choosing = isinstance(names, tuple)
        few_shot = self.few_shot_memory is not None and not self.training
        if few_shot:
            self.few_shot_memory.check_classes([names] if isinstance(names, str) else names)
        dynamic_vision = self.dynamic_visual_prompt_generator
        dynamic_text = self.dynamic_text_prompt_generator
        needs_frozen_pass = (
            dynamic_vision is not None
            or dynamic_text is not None
            or not self.prompt_vision
            or few_shot
            or choosing
            or plain_layers is not None
        )
        frozen_embedding, frozen_tokens, plain = None, None, None
        if needs_frozen_pass:
            # Its patch tokens are needed when they stand in for the prompted pass's, and for the few-shot memory.
            frozen_embedding, frozen_tokens, plain = self._frozen_pass(
                images, self.prompt_vision and not few_shot, plain_layers
            )
        chosen = None
        if choosing:
            with torch.no_grad(), record_function("adaclip.class_choice"):
                prototypes = class_prototypes(self.text_encoder.unprompted_features(list(names)))
                chosen = choose_classes(frozen_embedding, prototypes)
        if self.prompt_vision:
            with record_function("adaclip.vision_prompted"):
                dynamic = per_image(dynamic_vision, frozen_embedding) if dynamic_vision is not None else None
                prompts = self._block_prompts(self.visual_prompter, dynamic)
                embedding, layer_tokens = self._encode_image(images, prompts)
        else:  # the prompted vision pass would repeat the frozen one
            embedding, layer_tokens = frozen_embedding, frozen_tokens
        with record_function("adaclip.text"):
            dynamic = per_image(dynamic_text, frozen_embedding) if dynamic_text is not None else None
            if chosen is not None:
                per_class = [self.text_features(name, dynamic).expand(images.shape[0], -1, -1) for name in names]
                text = select_per_image(per_class, chosen)
            else:
                text = self.text_features(names, dynamic)
                text = text.expand(images.shape[0], -1, -1)

        with record_function("adaclip.similarity"):
            # Normalised features and their cosines in fp32, also under autocast (100 * cos needs the precision).
            image_features = F.normalize(per_image(self.cls_token_layer.head[0], embedding).float(), dim=-1)
            patch_tokens = self._project_patch_tokens(layer_tokens)  # [B, n_layers, L, D]
            with full_precision(images.device):
                logits = LOGIT_SCALE * patch_tokens @ text.unsqueeze(1).float()  # [B, n_layers, L, 2]
            grid = round(logits.shape[2] ** 0.5)
            layer_logits = logits.transpose(2, 3).reshape(*logits.shape[:2], 2, grid, grid)
        few_shot_map = None
        if few_shot:
            with torch.no_grad(), record_function("adaclip.few_shot"):
                query = self._project_patch_tokens(frozen_tokens)  # projected like the prompted pass's tokens
                with full_precision(images.device):  # cosines in fp32, also under autocast
                    if chosen is not None:
                        few_shot_map = select_per_image([self.few_shot_memory(query, name) for name in names], chosen)
                    else:
                        few_shot_map = self.few_shot_memory(query, names)
        return AdaCLIPFeatures(text, image_features, patch_tokens, layer_logits, few_shot_map), plain

    @torch.no_grad()
    def choose_classes(self, images: torch.Tensor, candidates: Sequence[str]) -> list[str]:
        """The class name ``forward(images, choose_from=candidates)`` scores each image with (:mod:`.class_choice`).

        A few-shot model's forward computes the embedding in a pass that keeps every token, which can round the last
        bits differently: only a near-tie between two candidates could then go the other way.

        Args:
            images: Normalised images ``[B, 3, image_size, image_size]``.
            candidates: The candidate class names.
        """
        names = self._check_inputs(images, None, candidates)
        embedding, _ = self._encode_image(images, None, embedding_only=True)
        prototypes = class_prototypes(self.text_encoder.unprompted_features(list(names)))
        return [names[index] for index in choose_classes(embedding, prototypes).tolist()]

    def _project_patch_tokens(self, layer_tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Feature layers' patch tokens projected by the patch projections and normalised, ``[B, n_layers, L, D]``."""
        return torch.stack(
            [
                F.normalize(head(tokens).float(), dim=-1)
                for head, tokens in zip(self.patch_token_layer.head, layer_tokens, strict=True)
            ],
            dim=1,
        )

    @torch.no_grad()
    def reference_tokens(self, images: torch.Tensor, max_batch: int = 8) -> torch.Tensor:
        """Memory features of images: the frozen pass's patch tokens, projected, normalised, ``[N, n_layers, L, D]``.

        The un-prompted pass is the same function of the image for a reference and a query (the prompted pass's
        dynamic prompts depend on each image); see :mod:`.few_shot`.

        Args:
            images: Normalised images ``[N, 3, image_size, image_size]``.
            max_batch: Most images per vision pass (bounds memory).
        """
        check_images(images, image_size=self.image_size)
        chunks = []
        for start in range(0, images.shape[0], max_batch):
            _, tokens = self._encode_image(images[start : start + max_batch], None)
            chunks.append(self._project_patch_tokens(tokens))
        return torch.cat(chunks)

    def reference_memory(self) -> FewShotMemory:
        """The few-shot memory, for code that changes it.

        Raises:
            RuntimeError: The model has no few-shot memory (``k_shot=0``).
        """
        if self.few_shot_memory is None:
            msg = "This AdaCLIP model is zero-shot (k_shot=0): it keeps no reference images."
            raise RuntimeError(msg)
        return self.few_shot_memory

    @torch.no_grad()
    def add_references(
        self, images: torch.Tensor, class_name: str, groups: Sequence[int] | torch.Tensor | None = None
    ) -> None:
        """Put normal reference images of a class into the few-shot memory (replacing that class's earlier ones).

        With ``few_shot.augment`` every image is also stored rotated by 90, 180 and 270 degrees and flipped.

        Args:
            images: Normalised images ``[N, 3, image_size, image_size]`` (or tiles of them).
            class_name: Their class name.
            groups: The reference image of every row (tiles of one image share it). Defaults to one per row.

        Raises:
            RuntimeError: The model has no few-shot memory (``k_shot=0``).
        """
        memory = self.reference_memory()
        self.check_class_name(class_name)
        groups = torch.arange(images.shape[0]) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        if self.few_shot.augment:
            views = [images, *(torch.rot90(images, turns, dims=(-2, -1)) for turns in (1, 2, 3))]
            views = [*views, *(view.flip(-1) for view in views)]
            images, groups = torch.cat(views), groups.repeat(len(views))
        was_training = self.training
        self.eval()
        try:
            memory.add(class_name, self.reference_tokens(images), groups)
        finally:
            self.train(was_training)

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def image_probabilities(self, features: AdaCLIPFeatures, hsf_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Normal/abnormal probabilities of each image, ``[B, 2]``.

        Args:
            features: Output of :meth:`features`.
            hsf_labels: Cluster labels ``[B, 5k]`` to use instead of k-means (for comparisons with the reference).
        """
        image_features = features.image_features.float()
        with full_precision(image_features.device):
            if self.use_hsf:
                with record_function("adaclip.hsf"):
                    patch_scores = features.layer_logits.mean(1).flatten(2).softmax(dim=1)[:, 1]  # [B, L]
                    fused = hybrid_semantic_fusion(
                        patch_scores, features.patch_tokens, self.k_clusters, labels=hsf_labels
                    )
                image_features = F.normalize(HSF_WEIGHT * fused + (1 - HSF_WEIGHT) * image_features, dim=-1)
            logits = LOGIT_SCALE * (image_features.unsqueeze(1) @ features.text_features.float())
            # float32 softmax also under autocast (its gradients would overflow in fp16).
            return logits.squeeze(1).softmax(dim=-1)

    def few_shot_upsampled(self, features: AdaCLIPFeatures, blur: bool = True) -> torch.Tensor:
        """The few-shot map alone at the input size, ``[B, H, W]``: upsampled and blurred like the zero-shot map."""
        with full_precision(features.few_shot_map.device):

            def one_map(grid: torch.Tensor) -> torch.Tensor:
                values = self._upsample(grid.unsqueeze(1).float())[:, 0]
                return self.blur(values) if blur else values

            return per_image(one_map, features.few_shot_map)

    def few_shot_image_score(self, few_shot_map: torch.Tensor) -> torch.Tensor:
        """The few-shot part of the image score: the map's maximum, or the mean of its top ``few_shot.top_percent``."""
        values = few_shot_map.flatten(1)
        percent = self.few_shot.top_percent
        if percent <= 0:
            return values.amax(dim=1)
        count = max(1, round(values.shape[1] * percent / 100))
        return values.topk(count, dim=1).values.mean(dim=1)

    def anomaly_map(self, features: AdaCLIPFeatures, blur: bool = True) -> torch.Tensor:
        """Test-time anomaly map ``[B, H, W]``: softmax of the mean layer logits, abnormal channel, then blurred."""
        # Upsampling is linear, so averaging the layers first equals averaging the upsampled maps.
        with record_function("adaclip.anomaly_map"), full_precision(features.layer_logits.device):
            # Per image on the CPU: how element-wise kernels split and vectorise a tensor depends on its size.
            def one_map(logits: torch.Tensor) -> torch.Tensor:
                probabilities = self._upsample(logits).softmax(dim=1)[:, 1]
                return self.blur(probabilities) if blur else probabilities

            return per_image(one_map, features.layer_logits.mean(1).float())

    def layer_maps(self, features: AdaCLIPFeatures) -> torch.Tensor:
        """Training-time maps: the softmax of every feature layer's upsampled logits, ``[B, n_layers, 2, H, W]``.

        Computed in float32 also under mixed precision, like the test-time map.
        """
        return torch.stack(
            [self._upsample(logits.float()).softmax(dim=1) for logits in features.layer_logits.unbind(1)],
            dim=1,
        )

    def _check_targets(
        self,
        images: torch.Tensor,
        gt_masks: torch.Tensor,
        gt_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary masks ``[B, H, W]`` and labels ``[B]`` (float), thresholded at 0.5 as the reference does."""
        batch, size = images.shape[0], (self.image_size, self.image_size)
        for name, value in (("gt_masks", gt_masks), ("gt_labels", gt_labels)):
            if not isinstance(value, torch.Tensor):
                msg = f"`{name}` must be a torch.Tensor, got {type(value).__name__}."
                raise TypeError(msg)
        masks = gt_masks[:, 0] if gt_masks.ndim == 4 and gt_masks.shape[1] == 1 else gt_masks
        if masks.ndim != 3 or masks.shape[0] != batch or tuple(masks.shape[-2:]) != size:
            msg = (
                f"`gt_masks` must have shape [B, H, W] or [B, 1, H, W] with B = {batch} images and H = W = "
                f"{self.image_size} (the model's image_size), got {tuple(gt_masks.shape)}; resize masks like the "
                f"images (nearest neighbour)."
            )
            raise ValueError(msg)
        labels = gt_labels.reshape(-1) if gt_labels.numel() == batch else gt_labels
        if labels.shape != (batch,):
            msg = f"`gt_labels` must hold one label per image ({batch}), got shape {tuple(gt_labels.shape)}."
            raise ValueError(msg)
        device = images.device
        return (masks.to(device).float() > 0.5).float(), (labels.to(device).float() > 0.5).float()

    def loss(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | str | None,
        gt_masks: torch.Tensor,
        gt_labels: torch.Tensor,
        hsf_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AdaCLIP's training loss of a batch: the mean over its images of each image's loss.

        Per image: focal loss of the image probabilities against the label, plus, for every feature layer, the focal
        loss of the layer's softmax map and the Dice losses of its abnormal channel against the mask and of its normal
        channel against the inverted mask (:func:`~anomalib_adaclip.model.loss.adaclip_loss`). The image probabilities
        use HSF (when enabled) as in the reference's training. The frozen CLIP gets no gradient.

        Args:
            images: Normalised images ``[B, 3, image_size, image_size]``.
            class_names: One class name per image, one for all, or ``None`` for ``self.class_name``.
            gt_masks: Ground-truth masks ``[B, H, W]`` or ``[B, 1, H, W]`` at ``image_size`` (bool, 0/1 or
                probabilities; values above 0.5 are anomalous).
            gt_labels: Image labels ``[B]`` (1 / True = anomalous).
            hsf_labels: Cluster labels ``[B, 5k]`` to use instead of k-means (for comparisons with the reference).

        Returns:
            The scalar loss.
        """
        names = self._check_inputs(images, class_names)
        masks, labels = self._check_targets(images, gt_masks, gt_labels)
        features = self.features(images, names)
        probabilities = self.image_probabilities(features, hsf_labels=hsf_labels)
        return adaclip_loss(self.layer_maps(features), probabilities, masks, labels).mean()

    def forward(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | str | None = None,
        *,
        choose_from: Sequence[str] | None = None,
    ) -> InferenceBatch | AdaCLIPTrainOutput:
        """Score images.

        Args:
            images: Normalised images ``[B, 3, image_size, image_size]``.
            class_names: One class name per image, one for all, or ``None`` for ``self.class_name``.
            choose_from: Candidate class names instead of ``class_names``: each image is scored with the one CLIP's
                zero-shot classification picks (:meth:`choose_classes` says which; multi-class exports use this).

        Returns:
            In eval mode, ``InferenceBatch(pred_score [B], anomaly_map [B, H, W])`` with the blurred map; in training
            mode, :class:`AdaCLIPTrainOutput` with the per-layer softmax maps and the image probabilities.
        """
        features = self.features(images, class_names, choose_from=choose_from)
        if self.training:
            probabilities = self.image_probabilities(features)
            return AdaCLIPTrainOutput(layer_maps=self.layer_maps(features), image_probs=probabilities)
        return self._inference_batch(features)

    @property
    def n_vision_blocks(self) -> int:
        """The depth of the CLIP's vision tower (the blocks the layer settings count, from 1)."""
        return len(self.clip.visual.transformer.resblocks)

    def score_with_plain_tokens(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | str | None = None,
        *,
        plain_layers: Sequence[int],
        choose_from: Sequence[str] | None = None,
    ) -> tuple[InferenceBatch, PlainTokens]:
        """AdaCLIP's eval outputs and, from the same frozen (un-prompted) pass, the tokens the mutual scoring reads.

        The outputs are those of :meth:`forward` in eval mode, bit for bit; CLIP's plain pass runs once for both
        (:mod:`.mutual_scoring`).

        Args:
            images: Normalised images ``[B, 3, image_size, image_size]``.
            class_names: As for :meth:`forward`.
            plain_layers: Blocks whose outputs are returned, **counted from 0** (the vision pass's indices:
                :func:`~anomalib_adaclip.model.mutual_scoring.musc_blocks` of MuSc's 1-based ``feature_layers``).
            choose_from: As for :meth:`forward`.

        Returns:
            ``InferenceBatch(pred_score, anomaly_map)`` as :meth:`forward`'s, and the
            :class:`~anomalib_adaclip.model.mutual_scoring.PlainTokens` of ``plain_layers``.

        Raises:
            RuntimeError: The model is in training mode.
            ValueError: A block outside the vision tower.
        """
        if self.training:
            msg = "score_with_plain_tokens gives the eval outputs: call model.eval() first."
            raise RuntimeError(msg)
        n_blocks = self.n_vision_blocks
        layers = list(plain_layers)
        if not layers or any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < n_blocks for b in layers):
            msg = (
                f"plain_layers must be a non-empty list of 0-based blocks in [0, {n_blocks - 1}] (the vision pass's "
                f"indices), got {plain_layers!r}."
            )
            raise ValueError(msg)
        features, plain = self._features(images, class_names, choose_from, layers)
        return self._inference_batch(features), plain

    def _inference_batch(self, features: AdaCLIPFeatures) -> InferenceBatch:
        """The eval outputs of a batch's features: the blurred map and the image score, few-shot parts fused."""
        probabilities = self.image_probabilities(features)
        score, anomaly_map = probabilities[:, 1].float(), self.anomaly_map(features)
        if features.few_shot_map is not None:
            # Both parts lie in [0, 1): the fused values stay probabilities-like (see .few_shot, "Scaling").
            few_shot_map = self.few_shot_upsampled(features)
            map_weight, score_weight = self.few_shot.map_weight, self.few_shot.score_weight
            anomaly_map = (1 - map_weight) * anomaly_map + map_weight * few_shot_map
            score = (1 - score_weight) * score + score_weight * self.few_shot_image_score(few_shot_map)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)
