"""AdaCLIPModel on settings the reference fixture does not cover: invariants that must hold for any setting."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from anomalib.data import InferenceBatch
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import ResidualAttentionBlock
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F  # noqa: N812

from anomalib_adaclip import AdaCLIPModel
from anomalib_adaclip.config import AdaCLIPConfig
from anomalib_adaclip.model.blocks import residual_attention_block
from anomalib_adaclip.model.sentence_tree import build_sentence_tree
from anomalib_adaclip.model.torch_model import AdaCLIPTrainOutput
from tests.conftest import load_reference, reference_model

SETTINGS = [
    {"prompting_type": "SD", "prompting_branch": "VL"},
    {"prompting_type": "S", "prompting_branch": "L", "use_hsf": False},
    {"prompting_type": "D", "prompting_branch": "L", "k_clusters": 3},
    {"prompting_type": "D", "prompting_branch": "VL", "prompting_depth": 1, "prompting_length": 1},
    {"prompting_type": "SD", "prompting_branch": "V", "prompting_depth": 3, "prompting_length": 8, "k_clusters": 7},
    {"prompting_type": "SD", "prompting_branch": "VL", "feature_layers": [2, 4], "k_clusters": 50},
    {"prompting_type": "S", "prompting_branch": "VL", "image_size": 280, "k_clusters": 10},
    {"prompting_type": "SD", "prompting_branch": "VL", "image_size": 168, "feature_layers": [3]},
]


def _images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_batch_equals_single_images_and_outputs_are_valid(make_model: Callable, setting: dict) -> None:
    model = make_model(**setting)
    size = model.image_size
    images = _images(3, size)
    classes = ["bottle", "pcb-board", "metal_nut"]
    with torch.no_grad():
        batch = model(images, classes)
        singles = [model(images[i : i + 1], classes[i : i + 1]) for i in range(3)]
    assert isinstance(batch, InferenceBatch)
    assert batch.pred_score.shape == (3,)
    assert batch.anomaly_map.shape == (3, size, size)
    assert torch.isfinite(batch.anomaly_map).all()
    assert torch.isfinite(batch.pred_score).all()
    assert batch.anomaly_map.min() >= 0 and batch.anomaly_map.max() <= 1
    assert batch.pred_score.min() >= 0 and batch.pred_score.max() <= 1
    for index, single in enumerate(singles):
        torch.testing.assert_close(single.pred_score[0], batch.pred_score[index], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.anomaly_map[0], batch.anomaly_map[index], atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", SETTINGS[:4], ids=str)
def test_training_forward_shapes_and_probabilities(make_model: Callable, setting: dict) -> None:
    model = make_model(**setting).train()
    output = model(_images(2, 224), ["bottle", "screw"])
    assert isinstance(output, AdaCLIPTrainOutput)
    n_layers = len(model.feature_layers)
    assert output.layer_maps.shape == (2, n_layers, 2, 224, 224)
    torch.testing.assert_close(output.layer_maps.sum(2), torch.ones(2, n_layers, 224, 224))
    torch.testing.assert_close(output.image_probs.sum(-1), torch.ones(2))
    assert output.layer_maps.requires_grad and output.image_probs.requires_grad


def test_test_map_is_softmax_of_mean_layer_logits(make_model: Callable) -> None:
    """The eval map equals the definition: upsample every layer, average, softmax, abnormal channel, blur."""
    model = make_model()
    images = _images(2, 224)
    with torch.no_grad():
        features = model.features(images, ["bottle", "bottle"])
        upsampled = [
            F.interpolate(layer, size=(224, 224), mode="bilinear", align_corners=True)
            for layer in features.layer_logits.unbind(1)
        ]
        expected = torch.stack(upsampled).mean(0).softmax(dim=1)[:, 1]
        torch.testing.assert_close(model.anomaly_map(features, blur=False), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(images, "bottle").anomaly_map, model.blur(expected), atol=1e-5, rtol=0)


def test_clip_is_frozen_and_stays_in_eval_mode(make_model: Callable) -> None:
    model = make_model()
    model.train()
    assert not model.clip.training
    assert all(not module.training for module in model.clip.modules())
    assert all(not parameter.requires_grad for parameter in model.clip.parameters())
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == set(model.trainable_state_dict())
    assert all(not name.startswith("clip.") for name in trainable)


def test_trainable_parameter_names_follow_the_released_layout(make_model: Callable) -> None:
    model = make_model(prompting_depth=2, prompting_length=3)
    names = set(model.trainable_state_dict())
    assert "text_prompter.static_prompts.0" in names and "visual_prompter.static_prompts.1" in names
    assert {f"dynamic_visual_prompt_generator.head.{i}.weight" for i in range(3)} <= names
    assert {f"patch_token_layer.head.{i}.bias" for i in range(4)} <= names
    assert "cls_token_layer.head.0.weight" in names
    assert not any(name.startswith("clip.") for name in names)


def test_unprompted_branch_has_no_generator(make_model: Callable) -> None:
    vision_only = make_model(prompting_type="SD", prompting_branch="V")
    assert vision_only.text_prompter is None and vision_only.dynamic_text_prompt_generator is None
    text_only = make_model(prompting_type="D", prompting_branch="L")
    assert text_only.visual_prompter is None and text_only.dynamic_visual_prompt_generator is None
    assert text_only.text_prompter is None and text_only.dynamic_text_prompt_generator is not None


def test_dynamic_text_prompts_are_shared_by_the_sentences_of_an_image(make_model: Callable) -> None:
    """With dynamic text prompts, different images of one class get different text features (the reference's D+L
    crash is fixed by broadcasting one image's prompts over its 48 sentences)."""
    model = make_model(prompting_type="D", prompting_branch="L")
    with torch.no_grad():
        features = model.features(_images(2, 224), ["bottle", "bottle"])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_static_text_features_do_not_depend_on_the_image(make_model: Callable) -> None:
    model = make_model(prompting_type="S", prompting_branch="VL")
    with torch.no_grad():
        features = model.features(_images(3, 224), ["bottle", "screw", "bottle"])
    torch.testing.assert_close(features.text_features[0], features.text_features[2])
    assert not torch.allclose(features.text_features[0], features.text_features[1])


def test_default_class_name_and_broadcast_name(make_model: Callable) -> None:
    model = make_model(class_name="tire")
    images = _images(2, 224)
    with torch.no_grad():
        by_default = model(images)
        by_string = model(images, "tire")
        by_list = model(images, ["tire", "tire"])
    torch.testing.assert_close(by_default.pred_score, by_list.pred_score)
    torch.testing.assert_close(by_string.anomaly_map, by_list.anomaly_map)


def test_class_name_dashes_become_spaces(make_model: Callable) -> None:
    model = make_model()
    with torch.no_grad():
        dashed = model.text_features(["pcb-board"])
        spaced = model.text_features(["pcb board"])
        underscored = model.text_features(["pcb_board"])
    torch.testing.assert_close(dashed, spaced)
    assert not torch.allclose(dashed, underscored)


def _full_context_text_embeddings(model: AdaCLIPModel, names: list[str], prompts: torch.Tensor | None) -> torch.Tensor:
    """The reference's way: every sentence padded to 77 tokens through open_clip's own blocks, ``[G, S, embed]``."""
    clip = model.clip
    tokenizer = SimpleTokenizer()
    embeddings = []
    for group, name in enumerate(names):
        normal, abnormal = model.ensemble.sentences(name)
        tokens = tokenizer(normal + abnormal)
        x = clip.token_embedding(tokens) + clip.positional_embedding
        for index, block in enumerate(clip.transformer.resblocks):
            if prompts is not None and 1 <= index < model.prompting_depth:
                block_prompts = prompts[index, group if prompts.shape[1] > 1 else 0]
                length = block_prompts.shape[0]
                x = torch.cat([x[:, :1], block_prompts.expand(len(tokens), -1, -1), x[:, 1 + length :]], dim=1)
            x = block(x, attn_mask=clip.attn_mask)
        pooled = clip.ln_final(x[torch.arange(len(tokens)), tokens.argmax(-1)]) @ clip.text_projection
        embeddings.append(F.normalize(pooled, dim=-1))
    return torch.stack(embeddings)


@pytest.mark.parametrize(
    ("setting", "names", "dynamic"),
    [
        ({}, ["bottle", "a much longer class name with several words"], False),
        ({}, ["bottle", "screw", "bottle"], True),
        ({"prompting_type": "D", "prompting_depth": 1}, ["bottle", "pcb-board"], True),
        ({"prompting_length": 12, "templates": ["{}", "a {}."]}, ["cap", "metal_nut"], True),
        ({"prompting_branch": "V"}, ["bottle", "wood"], False),
        ({}, ["bottle"], True),
    ],
    ids=["static-mixed-classes", "dynamic", "depth-1", "prompts-past-end-of-text", "unprompted", "one-name-3-images"],
)
def test_trimmed_text_context_equals_full_context(
    make_model: Callable,
    setting: dict,
    names: list[str],
    dynamic: bool,
) -> None:
    """Encoding each distinct token prefix once, with block 0 cached and the last block at the end tokens only
    (the causal text tower makes this exact), equals the full 77-token context of the reference."""
    model = make_model(**setting)
    generator = torch.Generator().manual_seed(0)
    dynamic_prompts = None
    groups = 3 if len(names) == 1 else len(names)  # one name serves every image's prompts
    if dynamic:
        dynamic_prompts = 0.1 * torch.randn(groups, model.prompting_length, 64, generator=generator)
    prompts = model._block_prompts(model.text_prompter, dynamic_prompts) if model.prompt_text else None
    with torch.no_grad():
        expected = _full_context_text_embeddings(model, names * (groups // len(names)), prompts)
        if prompts is not None and prompts.shape[1] == 1:
            prompts = prompts.expand(-1, len(names), -1, -1)
        packed = model.text_encoder.encode(names, prompts)
        again = model.text_encoder.encode(names, prompts)  # block 0 from the cache
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, packed, atol=0, rtol=0)


@pytest.mark.slow
def test_prefix_tree_text_tower_on_a_real_size_backbone() -> None:
    """ViT-B-16's text tower (random weights): the prefix tree equals the 77-token context, per image prompts."""
    torch.manual_seed(0)
    model = AdaCLIPModel(backbone="ViT-B-16", backbone_weights=None, image_size=224).eval()
    names = ["bottle", "metal_nut", "bottle"]
    dynamic = 0.1 * torch.randn(3, model.prompting_length, 512, generator=torch.Generator().manual_seed(1))
    prompts = model._block_prompts(model.text_prompter, dynamic)
    with torch.no_grad():
        expected = _full_context_text_embeddings(model, names, prompts)
        packed = model.text_encoder.encode(names, prompts)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)


def test_sentence_tree_by_hand() -> None:
    """Two sentences sharing "a b": 3 + 2 distinct prefixes; with one prompted position the prompt and the start
    token are single nodes that everything sees."""
    sot, eot = 49406, 49407
    tokens = torch.tensor([[sot, 5, 7, eot, 0], [sot, 5, 8, 9, eot]])
    tree = build_sentence_tree(tokens)
    # nodes: 0 sot, 1 "5", 2 "7", 3 eot(1), 4 "8", 5 "9", 6 eot(2)
    assert tree.tokens.tolist() == [sot, 5, 7, eot, 8, 9, eot]
    assert tree.positions.tolist() == [0, 1, 2, 3, 2, 3, 4]
    assert tree.ends.tolist() == [3, 6]
    assert tree.mask[6].nonzero().flatten().tolist() == [0, 1, 4, 5, 6]
    assert tree.mask[3].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert torch.equal(tree.later_mask, tree.mask)
    prompted = build_sentence_tree(tokens, shared=1)
    # later nodes: 0 sot, 1 prompt, then "7", eot(1), "8", "9", eot(2) fed by block-0 nodes 2, 3, 4, 5, 6
    assert prompted.sources.tolist() == [0, 0, 2, 3, 4, 5, 6]
    assert prompted.ends.tolist() == [3, 6]
    assert prompted.later_mask[6].nonzero().flatten().tolist() == [0, 1, 4, 5, 6]
    assert prompted.later_mask[2].nonzero().flatten().tolist() == [0, 1, 2]
    assert prompted.later_mask[1].nonzero().flatten().tolist() == [0, 1]
    short = build_sentence_tree(tokens, shared=3)  # the first sentence ends inside the prompt
    assert short.ends.tolist() == [3, 4] and len(short.sources) == 5  # 4 shared nodes + eot(2)


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
    images = _images(2, 224)
    with torch.no_grad():
        full, tokens = model._encode_image(images, None)
        cls_only, no_tokens = model._encode_image(images, None, embedding_only=True)
    assert len(tokens) == 4 and no_tokens == []
    torch.testing.assert_close(cls_only, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", [{}, {"prompting_branch": "V"}, {"prompting_type": "S"}], ids=str)
def test_caches_filled_in_inference_mode_serve_training(make_model: Callable, setting: dict) -> None:
    """Text caches filled under torch.inference_mode (validation) must not break a later training step."""
    model = make_model(**setting)
    images = _images(2, 224)
    with torch.inference_mode():
        model(images, ["bottle", "screw"])
    model.train()
    output = model(images, ["bottle", "screw"])
    (output.layer_maps.mean() + output.image_probs[:, 1].sum()).backward()
    assert any(parameter.grad is not None for parameter in model.parameters())


# Documented in the README ("Precision"): bf16 autocast on the CPU vs the reference's fp32 outputs.
BF16_MAP_TOLERANCE = 0.03
BF16_SCORE_TOLERANCE = 0.05


def test_bf16_autocast_on_cpu_stays_close_to_the_reference() -> None:
    data = load_reference()
    model = reference_model(data)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(data["images"], data["classes"])
    assert output.pred_score.dtype == torch.float32 and output.anomaly_map.dtype == torch.float32
    reference_maps = torch.from_numpy(
        np.stack([gaussian_filter(m.double().numpy(), sigma=4) for m in data["outputs"]["test_map"]])
    ).float()
    reference_scores = torch.stack(data["outputs"]["test_score"])
    assert (output.anomaly_map - reference_maps).abs().max() < BF16_MAP_TOLERANCE
    assert (output.pred_score - reference_scores).abs().max() < BF16_SCORE_TOLERANCE


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("prompting_type", "X", "prompting_type"),
        ("prompting_branch", "LV", "prompting_branch"),
        ("prompting_depth", 0, "prompting_depth"),
        ("prompting_depth", 5, "prompting_depth"),
        ("prompting_length", 0, "prompting_length"),
        ("feature_layers", [0, 4], "feature_layers"),
        ("feature_layers", [2, 2], "feature_layers"),
        ("k_clusters", 0, "k_clusters"),
        ("image_size", 230, "multiple of the backbone's patch size 14"),
        ("normal_states", ["no placeholder"], "normal_states"),
    ],
)
def test_invalid_settings_are_clear_errors(make_model: Callable, argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(**{argument: value})


@pytest.mark.parametrize(
    ("images", "classes", "error", "message"),
    [
        (torch.randn(3, 224, 224), None, ValueError, r"\[B, 3, H, W\]"),
        (torch.randn(1, 1, 224, 224), None, ValueError, r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), None, TypeError, "floating-point"),
        (torch.randn(1, 3, 200, 200), None, ValueError, "224x224"),
        (torch.randn(2, 3, 224, 224), ["one"], ValueError, "2 images"),
        ("not a tensor", None, TypeError, "torch.Tensor"),
    ],
)
def test_invalid_inputs_are_clear_errors(
    make_model: Callable,
    images: object,
    classes: list[str] | None,
    error: type[Exception],
    message: str,
) -> None:
    model = make_model()
    with pytest.raises(error, match=message):
        model(images, classes)


def test_default_feature_layers() -> None:
    config = AdaCLIPConfig()
    assert config.resolved_feature_layers(24) == (6, 12, 18, 24)
    assert config.resolved_feature_layers(12) == (3, 6, 9, 12)
    assert config.resolved_feature_layers(4) == (1, 2, 3, 4)
    assert config.resolved_feature_layers(2) == (1, 2)


def test_paper_defaults() -> None:
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(AdaCLIPConfig).parameters.items()}
    assert defaults["backbone"] == "ViT-L-14-336"
    assert defaults["image_size"] == 518
    assert defaults["prompting_depth"] == 4
    assert defaults["prompting_length"] == 5
    assert defaults["prompting_type"] == "SD"
    assert defaults["prompting_branch"] == "VL"
    assert defaults["use_hsf"] is True
    assert defaults["k_clusters"] == 20
    assert defaults["blur_sigma"] == 4.0
