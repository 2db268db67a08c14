"""The demo's models: their settings as the page shows them, the weights check, building and keeping, references.

The models are the micro CLIP of ``tests/conftest.py`` with prompts saved as checkpoint files (``demo_settings``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from anomalib_adaclip.components.references import FewShotReferenceError
from anomalib_adaclip.config import SMOKE_BACKBONE, SMOKE_IMAGE_SIZE
from anomalib_adaclip.demo import example_images
from anomalib_adaclip.demo.models import (
    DemoModelSettings,
    KeptModels,
    MissingWeightsError,
    missing_weights,
    smoke_settings,
)
from anomalib_adaclip.weights import WeightsNotFoundError, download_clip_weights, download_released_checkpoint
from tests.conftest import TIRE_ROOT

CPU = torch.device("cpu")
TRAIN_GOOD = sorted((TIRE_ROOT / "tire" / "train" / "good").glob("*.png"))  # 800x600
EXAMPLES = example_images()


def test_settings_describe_themselves_in_one_line_and_name_what_changed() -> None:
    released = DemoModelSettings()
    assert released.describe() == "checkpoint mvtec_colondb, backbone ViT-L-14-336 (openai weights), 518 px"
    files = DemoModelSettings('{"embed_dim": 32}', "/weights/clip.pt", "/runs/prompts.pt", 112, k_shot=2)
    assert files.describe() == (
        "checkpoint prompts.pt, backbone tiny random CLIP (clip.pt weights), 112 px, few-shot k_shot=2"
    )
    assert files.zero_shot() == DemoModelSettings('{"embed_dim": 32}', "/weights/clip.pt", "/runs/prompts.pt", 112)
    assert files.changes_from(dataclasses.replace(files, checkpoint="visa_clinicdb", k_shot=1)) == [
        "checkpoint: visa_clinicdb -> /runs/prompts.pt",
        "k_shot: 1 -> 2",
    ]
    smoke = smoke_settings()
    assert json.loads(smoke.backbone) == SMOKE_BACKBONE and smoke.image_size == SMOKE_IMAGE_SIZE
    assert smoke.describe() == (
        f"checkpoint none (untrained prompts), backbone tiny random CLIP (random weights), {SMOKE_IMAGE_SIZE} px"
    )


def test_missing_weights_are_all_named_with_the_clis_messages_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_settings: DemoModelSettings
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("ADACLIP_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError) as clip_error:
        download_clip_weights("ViT-B-32", "openai")
    with pytest.raises(WeightsNotFoundError) as checkpoint_error:
        download_released_checkpoint("mvtec_colondb")
    released = DemoModelSettings("ViT-B-32", "openai", "mvtec_colondb", 224)
    assert missing_weights(demo_settings, offline=True) == []  # files on disk
    models = KeptModels(CPU, offline=True)
    with pytest.raises(MissingWeightsError) as error:
        models.load(released)
    expected = {str(clip_error.value), str(checkpoint_error.value)}  # word for word, one paragraph each
    assert {str(each) for each in error.value.errors} == expected
    assert set(str(error.value).split("\n\n")) == expected
    assert models.model is None and released not in models


def test_a_model_is_built_once_kept_beside_its_other_kind_and_rebuilt_naming_the_changed_setting(
    demo_settings: DemoModelSettings, prompt_checkpoints: list[Path]
) -> None:
    models = KeptModels(CPU)
    built = models.load(demo_settings)
    assert built.startswith("Built the model (checkpoint prompts_1.pt, backbone tiny random CLIP (micro_clip.pt")
    assert built.endswith("; it is kept for later runs.")
    zero_shot = models.model
    assert zero_shot is not None and not zero_shot.training and models.settings == demo_settings
    assert models.load(demo_settings) == "" and models.model is zero_shot  # kept: nothing built

    two = dataclasses.replace(demo_settings, k_shot=2)
    built = models.load(two)
    assert built.startswith("Built the few-shot model (") and "few-shot k_shot=2" in built
    assert "(the zero-shot model is kept too)" in built
    few_shot = models.model
    assert few_shot is not zero_shot and few_shot.model.few_shot_memory is not None
    assert models.load(demo_settings) == "" and models.model is zero_shot  # switching back builds nothing

    one = models.load(dataclasses.replace(demo_settings, k_shot=1))
    assert one.startswith("Rebuilt the model because its settings changed (k_shot: 2 -> 1): ")
    assert two not in models and models.kept(demo_settings) is zero_shot

    other = dataclasses.replace(demo_settings, checkpoint=str(prompt_checkpoints[1]))
    rebuilt = models.load(other)
    assert (
        rebuilt.startswith("Rebuilt the model because its settings changed (checkpoint: ") and "prompts_2.pt" in rebuilt
    )
    assert demo_settings not in models and models.model is not zero_shot  # the other settings' models are gone


def _copies(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in paths]


def test_references_are_read_again_only_when_their_contents_class_name_or_tiling_change(
    demo_settings: DemoModelSettings, tmp_path: Path
) -> None:
    from anomalib.data.utils.image import read_image

    models = KeptModels(CPU)
    models.load(dataclasses.replace(demo_settings, k_shot=2))
    model = models.model
    first = _copies(TRAIN_GOOD[:2], tmp_path / "first")
    second = _copies(TRAIN_GOOD[2:4], tmp_path / "second")
    assert models.set_references(first, "tire", tiling=False).startswith("read in ")
    # The memory holds them: a reference as query is at distance ~0 everywhere (its patches are in the memory).
    image = model.pre_processor.transform(read_image(first[0], as_tensor=True))[None]
    with torch.no_grad():
        assert float(model.model.features(image, "tire").few_shot_map.max()) < 1e-5
    renamed = [Path(shutil.copy(first[1], tmp_path / "renamed.png")), first[0]]  # the same contents, other names
    assert models.set_references(renamed, "tire", tiling=False) == "kept from the previous run"
    assert models.set_references(second, "tire", tiling=False).startswith("read in ")
    assert models.set_references(second, "tyre", tiling=False).startswith("read in ")
    assert model.model.few_shot_memory.class_names == ["tyre"]  # one class name at a time
    small = _copies(EXAMPLES[:2], tmp_path / "small")  # 200x150: 6 tiles each at 112 px
    assert models.set_references(small, "tyre", tiling=False).startswith("read in ")
    model.set_tiling(True)
    assert models.set_references(small, "tyre", tiling=True).startswith("read in ")  # now cut into tiles

    broken = tmp_path / "broken.png"
    broken.write_bytes(first[0].read_bytes()[:3000])
    with pytest.raises(FewShotReferenceError, match=r"broken\.png cannot be read as an image"):
        models.set_references([small[0], broken], "tire", tiling=True)
    assert model.model.few_shot_memory.class_names == ["tyre"]  # a bad file leaves the memory as it was
    assert models.set_references(small, "tyre", tiling=True).startswith("read in ")  # and is read again
