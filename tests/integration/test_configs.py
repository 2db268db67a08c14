"""The ready-made configs in configs/: the protocol's checkpoint, a comment on every knob, and they parse and build.

Building a model from a config would download the ViT-L CLIP and the released prompts; the parse-and-build test
overrides the backbone, its weights and the checkpoint with a tiny offline setting, the way a user overrides any
key on the command line, and checks that everything else comes from the file.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from anomalib.cli import AnomalibCLI
from anomalib.data import Folder, MVTecAD, Visa

from anomalib_adaclip import AdaCLIP
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT

CONFIGS = {
    # config: (data module, the released checkpoint its protocol calls for)
    "mvtecad.yaml": (MVTecAD, "visa_clinicdb"),  # MVTec AD is tested with prompts trained on VisA + ClinicDB
    "visa.yaml": (Visa, "mvtec_colondb"),  # everything else with prompts trained on MVTec AD + ColonDB
    "folder.yaml": (Folder, "mvtec_colondb"),
}
COMPONENTS = {"pre_processor", "post_processor", "evaluator", "visualizer"}
KNOBS = [name for name in inspect.signature(AdaCLIP.__init__).parameters if name not in {"self", *COMPONENTS}]


def _config(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "configs" / name).read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_sets_the_protocol_and_every_model_knob(name: str) -> None:
    config = _config(name)
    data_class, checkpoint = CONFIGS[name]
    model = config["model"]
    assert model["class_path"] == "anomalib_adaclip.AdaCLIP"
    arguments = model["init_args"]
    assert list(arguments) == KNOBS  # every knob, in the constructor's order
    assert arguments["checkpoint"] == checkpoint
    assert arguments["backbone"] == "ViT-L-14-336"
    assert arguments["backbone_weights"] == "openai"
    assert arguments["image_size"] == 518
    assert config["data"]["class_path"] == f"anomalib.data.{data_class.__name__}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_setting_is_commented(name: str) -> None:
    for number, line in enumerate((PROJECT_ROOT / "configs" / name).read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # comments and section headers
        if stripped.startswith("class_path:"):
            continue  # the class is named by its own value
        assert "#" in line, f"{name}:{number} has no comment: {line!r}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_parses_and_builds_with_an_offline_backbone(name: str, tmp_path: Path) -> None:
    tiny = [
        "--model.backbone",
        json.dumps(MICRO_BACKBONE),
        "--model.backbone_weights",
        "null",
        "--model.checkpoint",
        "null",
        "--model.image_size",
        "112",
    ]
    arguments = ["test", "--config", str(PROJECT_ROOT / "configs" / name), *tiny, "--default_root_dir", str(tmp_path)]
    cli = AnomalibCLI(arguments, run=False)
    config = _config(name)
    file_arguments = config["model"]["init_args"]
    assert isinstance(cli.model, AdaCLIP)
    for key in ("prompts", "few_shot", "mutual", "tiling", "thresholds"):
        assert cli.model.hparams[key] == file_arguments[key], key  # every setting of each group is in the file
    assert cli.model.hparams["classes"] == file_arguments["classes"]
    assert cli.model.hparams["backbone"] == MICRO_BACKBONE
    assert cli.model.post_processor.mode == file_arguments["thresholds"]["mode"]
    data_class, _ = CONFIGS[name]
    assert type(cli.datamodule) is data_class
    data_arguments = config["data"]["init_args"]
    assert cli.datamodule.eval_batch_size == data_arguments["eval_batch_size"]
    assert cli.datamodule.val_split_mode.value == data_arguments["val_split_mode"]
    if "category" in data_arguments:
        assert cli.datamodule.category == data_arguments["category"]
