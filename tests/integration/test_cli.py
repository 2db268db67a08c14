"""AdaCLIP through anomalib's CLI and the ``anomalib-adaclip`` console script, and the quick start.

The real console entries run in subprocesses (``anomalib test``, ``anomalib-adaclip test``, the quick start's smoke
mode and its offline message). Parsing, predict and export go through anomalib's ``AnomalibCLI`` in this process,
the class both console scripts run. A tiny random CLIP (MICRO_BACKBONE at 112 px, weights in a file) replaces the
real backbone everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from anomalib.cli import AnomalibCLI
from anomalib.deploy import TorchInferencer
from PIL import Image

from anomalib_adaclip import AdaCLIPModel, cli
from anomalib_adaclip.cli.quickstart import SMOKE_KEY, SMOKE_NOTE
from anomalib_adaclip.config import RarityScoringConfig
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.weights import save_checkpoint
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT
from tests.helpers import console_script, explain, run, tiny_flags

# ----------------------------------------------------------------------------------------------------------------------
# The real console entries on the tire sample
# ----------------------------------------------------------------------------------------------------------------------
TIRE_DATA = ["--data", "MVTecAD", "--data.root", str(TIRE_ROOT), "--data.category", "tire", "--data.num_workers", "0"]


def test_anomalib_test_with_dotted_model_path_and_json_backbone(micro_weights: Path, tmp_path: Path) -> None:
    command = [
        *console_script("anomalib"),
        "test",
        "--model",
        "anomalib_adaclip.AdaCLIP",
        *tiny_flags(micro_weights),
        *TIRE_DATA,
        "--trainer.accelerator",
        "cpu",
        "--default_root_dir",
        str(tmp_path / "results"),
    ]
    result = run(command, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, explain(result)
    for metric in ("image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_F1Max", "pixel_AUPRO"):
        assert metric in output, metric
    assert "class name 'tire'" in output
    run_dir = tmp_path / "results" / "AdaCLIP" / "MVTecAD" / "tire" / "latest"
    assert len(list((run_dir / "images").rglob("*.png"))) == 15
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "anomalib_adaclip.AdaCLIP"
    assert saved["model"]["init_args"]["backbone"] == MICRO_BACKBONE


def test_anomalib_adaclip_test_with_short_model_name_from_a_yaml_config(micro_weights: Path, tmp_path: Path) -> None:
    config = {
        "model": {
            "class_path": "AdaCLIP",  # the short name: the console script registers the plugin first
            "init_args": {
                "backbone": MICRO_BACKBONE,
                "backbone_weights": str(micro_weights),
                "image_size": 112,
                "classes": {"name": "tyre"},
            },
        },
        "data": {
            "class_path": "MVTecAD",
            "init_args": {"root": str(TIRE_ROOT), "category": "tire", "num_workers": 0, "eval_batch_size": 8},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "default_root_dir": str(tmp_path / "results"),
    }
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run([*console_script("anomalib-adaclip"), "test", "--config", str(config_file)], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, explain(result)
    for metric in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        assert metric in output, metric
    assert "class name 'tyre'" in output and "from classes.name" in output  # the argument beats the category


def documented_subcommands(text: str) -> set[str]:
    """The ``anomalib-adaclip <name>`` commands a Markdown text shows (in code blocks and inline code)."""
    found, fenced = set(), False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        environment = r"(?:[A-Z_]+=\S+\s+)*"  # VAR=value before the command
        pattern = rf"^\s*(?:\$\s*)?{environment}" if fenced else rf"`{environment}"
        found.update(re.findall(pattern + r"anomalib-adaclip ([a-z][a-z-]*)", line))
    return found


def test_the_subcommands_are_the_ones_the_help_and_the_documentation_name(capsys: pytest.CaptureFixture) -> None:
    own = set(cli.COMMANDS)
    anomalibs = {*AnomalibCLI.subcommands(), *AnomalibCLI.anomalib_subcommands(), "install"}
    cli.dispatch.print_commands()
    listed = set(re.findall(r"^  ([a-z][a-z-]*)\s", capsys.readouterr().out, re.MULTILINE))
    assert listed == own | {"predict"}, f"--help lists {sorted(listed)}, the dispatcher has {sorted(own)} + predict"
    pages = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
    documented = set().union(*(documented_subcommands(page.read_text()) for page in pages))
    assert own <= documented, f"subcommands no documentation page shows: {sorted(own - documented)}"
    assert documented <= own | anomalibs, (
        f"documented subcommands that do not exist: {sorted(documented - own - anomalibs)}"
    )
    # The CLI reference page is generated from the parsers: tests/docs/test_cli_reference.py compares it with them.


# ----------------------------------------------------------------------------------------------------------------------
# Every constructor argument from YAML and from --model.X
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def every_knob(micro_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A non-default value for every AdaCLIP argument (the checkpoint fits the prompt settings)."""
    settings = {
        "image_size": 140,
        "feature_layers": [2, 4],
        "prompting_depth": 3,
        "prompting_length": 4,
        "prompting_type": "SD",
        "prompting_branch": "V",
    }
    torch.manual_seed(1)
    donor = AdaCLIPModel(backbone=MICRO_BACKBONE, backbone_weights=None, **settings)
    checkpoint = tmp_path_factory.mktemp("prompts") / "prompts.pt"
    save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), checkpoint)
    return {
        "backbone": MICRO_BACKBONE,
        "backbone_weights": str(micro_weights),
        "image_size": 140,
        "checkpoint": str(checkpoint),
        "prompts": {
            "feature_layers": [2, 4],
            "depth": 3,
            "length": 4,
            "type": "SD",
            "branch": "V",
            "use_hsf": False,
            "k_clusters": 7,
            "blur_sigma": 2.5,
            "normal_states": ["{}", "good {}"],
            "abnormal_states": ["bad {}"],
            "templates": ["a photo of a {}.", "a close-up of the {}."],
        },
        "few_shot": {
            "k_shot": 3,
            "source": {"screw": "references/screws", "metal-nut": "references/nuts"},
            "seed": 5,
            "map_weight": 0.25,
            "score_weight": 0.75,
            "augment": True,
            "coreset_ratio": 0.5,
            "top_percent": 1.5,
        },
        "mutual": None,  # the one default kept: tiling is on below, which mutual scoring refuses (see the next test)
        "tiling": {"overlap": 20, "score": "whole"},
        "classes": {
            "name": "metal-nut",
            "map": {"*/screws/*": "screw", "nuts": "metal-nut"},
            "from_parent": True,
            "export_names": ["metal-nut", "screw"],
        },
        "thresholds": {"image": 0.3, "pixel": 0.7, "mode": "fixed"},
        "rarity": None,  # tiling is on above, which rarity scoring refuses (see test_every_rarity_setting_is_settable)
        "pre_processor": True,
        "post_processor": True,
        "evaluator": False,
        "visualizer": False,
    }


MUTUAL_KNOBS = {
    "weight": 0.25,
    "group_size": 12,
    "feature_layers": [1, 4],
    "r_list": [1, 3],
    "topmin_min": 0.1,
    "topmin_max": 0.5,
    "rscin_k": [1, 2],
}


def _flag_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _cli_model(arguments: dict[str, Any], source: str, tmp_path: Path) -> Any:
    """The model anomalib's CLI builds from ``arguments``: a YAML file (groups nested under init_args) or flags (one
    ``--model.<group>.<setting>`` per setting)."""
    if source == "yaml":
        config_file = tmp_path / "model.yaml"
        model_config = {"class_path": "anomalib_adaclip.AdaCLIP", "init_args": arguments}
        config_file.write_text(yaml.safe_dump({"model": model_config}))
        flags = ["--config", str(config_file)]
    else:
        flags = ["--model", "anomalib_adaclip.AdaCLIP"]
        for key, value in arguments.items():
            if isinstance(value, dict) and key != "backbone":
                for setting, inner in value.items():
                    flags += [f"--model.{key}.{setting}", _flag_value(inner)]
            elif value is not None:
                flags += [f"--model.{key}", _flag_value(value)]
    return AnomalibCLI(["test", *flags, "--default_root_dir", str(tmp_path)], run=False).model


@pytest.mark.parametrize("source", ["yaml", "flags"])
def test_every_constructor_argument_is_settable(
    every_knob: dict[str, Any], source: str, tmp_path: Path, micro_weights: Path
) -> None:
    import inspect

    from anomalib_adaclip import AdaCLIP

    assert set(every_knob) == set(inspect.signature(AdaCLIP.__init__).parameters) - {"self"}
    model = _cli_model(every_knob, source, tmp_path)
    for key, value in every_knob.items():
        if key not in {"pre_processor", "post_processor", "evaluator", "visualizer"}:
            assert model.hparams[key] == value, key  # plain types: the groups as dicts
    config = model.model.config.to_dict()
    prompts = every_knob["prompts"]
    assert config["image_size"] == 140 and config["feature_layers"] == prompts["feature_layers"]
    for key in ("depth", "length", "type", "branch"):
        assert config[f"prompting_{key}"] == prompts[key], key
    assert config["use_hsf"] is False and config["k_clusters"] == 7 and config["blur_sigma"] == 2.5
    assert config["normal_states"] == prompts["normal_states"] and config["templates"] == prompts["templates"]
    assert model.class_names.settings.name == "metal-nut"
    assert model.class_names.export_names == ("metal-nut", "screw")
    assert model.post_processor.mode == "fixed"
    assert float(model.post_processor.fixed_image_threshold) == pytest.approx(0.3)
    assert float(model.post_processor.fixed_pixel_threshold) == pytest.approx(0.7)
    assert model.evaluator is None and model.visualizer is None and model.pre_processor is not None
    rules = model.class_names.batches.rules
    assert rules.match("/data/nuts/1.png") == ("metal-nut", "folder 'nuts' of classes.map")
    assert rules.from_parent is True
    assert (model.tiling.enabled, model.tiling.overlap, model.tiling.settings.score) == (True, 20, "whole")
    assert model.model.few_shot.to_dict() == every_knob["few_shot"]
    assert model.references.source == every_knob["few_shot"]["source"]
    del micro_weights


@pytest.mark.parametrize("source", ["yaml", "flags"])
def test_every_mutual_setting_is_settable(source: str, tmp_path: Path, micro_weights: Path) -> None:
    arguments = {"backbone": MICRO_BACKBONE, "backbone_weights": str(micro_weights), "image_size": 112}
    model = _cli_model({**arguments, "mutual": MUTUAL_KNOBS, "visualizer": False}, source, tmp_path)
    assert model.hparams["mutual"] == MUTUAL_KNOBS
    assert model.mutual_groups.config.to_dict() == MUTUAL_KNOBS
    scoring = model.mutual_groups.settings  # MuSc's own settings: 1-based layers as the group's
    assert (list(scoring.feature_layers), list(scoring.r_list), list(scoring.rscin_k)) == ([1, 4], [1, 3], [1, 2])
    assert (scoring.topmin_min, scoring.topmin_max) == (0.1, 0.5)


RARITY_KNOBS = {
    "weight": 0.5,
    "text_branch": "adaclip",
    "tpb_weights": None,
    "scoring": {"text_layers": [2, 4], "rarity_layers": [1, 3], "topk": 2, "keep_ftime": 2.0, "sigma": 1.0},
}


@pytest.mark.parametrize("source", ["yaml", "flags"])
def test_every_rarity_setting_is_settable(source: str, tmp_path: Path, micro_weights: Path) -> None:
    arguments = {"backbone": MICRO_BACKBONE, "backbone_weights": str(micro_weights), "image_size": 112}
    if source == "yaml":
        model = _cli_model({**arguments, "rarity": RARITY_KNOBS, "visualizer": False}, source, tmp_path)
    else:  # nested groups as flags: --model.rarity.weight 0.5 --model.rarity.scoring.topk 2
        flags = ["--model", "anomalib_adaclip.AdaCLIP", "--model.visualizer", "false"]
        for key, value in arguments.items():
            flags += [f"--model.{key}", _flag_value(value)]
        flags += ["--model.rarity.weight", "0.5", "--model.rarity.text_branch", "adaclip"]
        for setting, value in RARITY_KNOBS["scoring"].items():
            flags += [f"--model.rarity.scoring.{setting}", _flag_value(value)]
        model = AnomalibCLI(["test", *flags, "--default_root_dir", str(tmp_path)], run=False).model
    expected = {**RARITY_KNOBS, "scoring": {**RarityScoringConfig().to_dict(), **RARITY_KNOBS["scoring"]}}
    assert model.hparams["rarity"] == expected
    assert model.rarity.config.to_dict() == expected
    assert model.rarity.plain_layers == [0, 1, 2, 3]  # the 1-based layers 1 to 4 as the plain pass's 0-based blocks


@pytest.mark.parametrize("source", ["yaml", "flags", "init_args_flags"])
def test_an_old_flat_argument_names_its_new_place_in_one_line(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from anomalib_adaclip.cli.dispatch import main

    if source == "yaml":
        config_file = tmp_path / "model.yaml"
        init_args = {"image_size": 112, "mutual_weight": 0.5}
        config_file.write_text(yaml.safe_dump({"model": {"class_path": "AdaCLIP", "init_args": init_args}}))
        arguments = ["test", "--config", str(config_file)]
    else:
        flag = "--model.mutual_weight" if source == "flags" else "--model.init_args.mutual_weight"
        arguments = ["test", "--model", "AdaCLIP", flag, "0.5"]
    assert main(arguments) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "`mutual_weight` is now `mutual.weight`" in line and "--model.mutual.weight" in line


# ----------------------------------------------------------------------------------------------------------------------
# predict and export through the CLI class
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bare_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    generated = generate_defect_dataset(tmp_path_factory.mktemp("generated"), "widget", n_train=1, n_good=1, size=96)
    folder = tmp_path_factory.mktemp("bare") / "to_inspect"
    folder.mkdir()
    for index, source in enumerate(sorted((generated / "test" / "defect").glob("*.png"))[:2]):
        (folder / f"part_{index}.png").write_bytes(source.read_bytes())
    return folder


@pytest.mark.parametrize("target", ["folder", "image"])
def test_predict_writes_heatmaps_without_checkpoint_or_validation_data(
    micro_weights: Path, bare_images: Path, tmp_path: Path, target: str
) -> None:
    data = bare_images if target == "folder" else bare_images / "part_0.png"
    arguments = ["predict", "--model", "anomalib_adaclip.AdaCLIP", *tiny_flags(micro_weights), "--data", str(data)]
    AnomalibCLI([*arguments, "--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path)])
    written = sorted((tmp_path / "AdaCLIP" / "latest" / "images").rglob("*.png"))
    expected = ["part_0.png", "part_1.png"] if target == "folder" else ["part_0.png"]
    assert [path.name for path in written] == expected
    with Image.open(written[0]) as image:
        assert image.width == 3 * image.height  # image | image + anomaly map | image + predicted mask (no truth)


def test_export_torch_through_the_cli_runs_in_torch_inferencer(
    micro_weights: Path, bare_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = ["export", "--model", "anomalib_adaclip.AdaCLIP", *tiny_flags(micro_weights), "--model.classes.name"]
    AnomalibCLI([*arguments, "widget", "--export_type", "torch", "--export_root", str(tmp_path)])
    path = tmp_path / "weights" / "torch" / "model.pt"
    assert path.is_file()
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    inferencer = TorchInferencer(path, device="cpu")
    assert inferencer.model.model.class_name == "widget"
    with torch.no_grad():
        prediction = inferencer.predict(bare_images / "part_0.png")
    assert prediction.pred_score.shape == (1,) and prediction.anomaly_map.shape == (1, 112, 112)
    assert 0.0 <= float(prediction.pred_score) <= 1.0


# ----------------------------------------------------------------------------------------------------------------------
# The quick start
# ----------------------------------------------------------------------------------------------------------------------
def test_quickstart_smoke_runs_offline_and_marks_every_output(tmp_path: Path) -> None:
    output = tmp_path / "out"
    command = [*console_script("anomalib-adaclip"), "quickstart", "--smoke", "--output", str(output)]
    result = run([*command, "--num-workers", "0", "--device", "cpu"], tmp_path)
    assert result.returncode == 0, explain(result)
    table = [line for line in result.stdout.splitlines() if line.strip().startswith(("image_", "pixel_"))]
    assert {line.split()[0] for line in table} == {
        "image_AUROC",
        "image_F1Max",
        "pixel_AUROC",
        "pixel_F1Max",
        "pixel_AUPRO",
    }
    assert all("meaningless" in line for line in table)
    assert SMOKE_NOTE in result.stdout
    files = [path for path in output.rglob("*") if path.is_file() and not path.is_symlink()]
    kinds = {path.suffix for path in files}
    assert kinds == {".png", ".ckpt", ".json"}, sorted(map(str, files))
    for path in files:
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert image.text.get("Warning") == SMOKE_NOTE, path
                assert image.convert("RGB").getpixel((1, 1)) == (170, 0, 0), path  # the red banner
        elif path.suffix == ".ckpt":
            assert torch.load(path, map_location="cpu", weights_only=True)[SMOKE_KEY] == SMOKE_NOTE
        else:
            assert json.loads(path.read_text())["WARNING"] == SMOKE_NOTE


@pytest.mark.slow  # the same check runs in this process above; this one adds the console script's exit code
def test_quickstart_offline_message_through_the_console_script(tmp_path: Path) -> None:
    environment = {
        "ADACLIP_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "ADACLIP_WEIGHTS_DIR": str(tmp_path),
    }
    command = [*console_script("anomalib-adaclip"), "quickstart", "--root", str(tmp_path / "empty")]
    result = run(command, tmp_path, **environment)
    assert result.returncode == 2, explain(result)
    assert "cannot start: 3 input(s) are missing" in result.stderr
    assert "pretrained_visa_clinicdb.pth" in result.stderr and "ViT-L-14-336" in result.stderr
    assert str(tmp_path / "empty" / "bottle") in result.stderr
    assert not (tmp_path / "results").exists()
