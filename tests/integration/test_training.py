"""Training AdaCLIP's prompts with Lightning: loss, frozen CLIP, checkpoints, seeds, resume, validation, DDP, CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from anomalib.data import ImageBatch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_adaclip import AdaCLIP, AdaCLIPModel
from anomalib_adaclip.cli import main as cli_main
from anomalib_adaclip.cli.train import main
from anomalib_adaclip.data import PAPER_DATASETS, AuxiliaryDataModule, DatasetSource
from anomalib_adaclip.training import CheckpointSettings, train, trainable_tensors_of
from anomalib_adaclip.weights import RELEASED_PREFIX, read_checkpoint
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT
from tests.data.paper_layouts import write_dataset_tree
from tests.helpers import make_folder_dataset

CPU = {"accelerator": "cpu", "devices": 1, "enable_model_summary": False, "enable_progress_bar": False}


def _model(weights: Path, seed: int = 0, **overrides: Any) -> AdaCLIP:
    torch.manual_seed(seed)
    arguments = {
        "backbone": MICRO_BACKBONE,
        "backbone_weights": str(weights),
        "image_size": 112,
        "prompts": {"k_clusters": 4},  # HSF on 20 of the 64 patches: quicker than the default 20 of (at most) 100
        "visualizer": False,
    }
    arguments.update(overrides)
    return AdaCLIP(**arguments)


def _tire(mosaic_probability: float = 0.0) -> DatasetSource:
    return DatasetSource("MVTecAD", root=TIRE_ROOT, categories=["tire"], mosaic_probability=mosaic_probability)


def _data(**overrides: Any) -> AuxiliaryDataModule:
    arguments = {"train": [_tire()], "batch_size": 4, "num_workers": 0}
    arguments.update(overrides)
    return AuxiliaryDataModule(**arguments)


def _tire_batch(model: AdaCLIP) -> ImageBatch:
    """All 15 tire test images, pre-processed exactly as in training and testing."""
    data = _data(batch_size=15)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    batch.image, batch.gt_mask = model.pre_processor.transform(batch.image, batch.gt_mask)
    return batch


def _dataset_loss(model: AdaCLIP, batch: ImageBatch) -> float:
    with torch.no_grad():
        return float(model.model.loss(batch.image, batch.class_name, batch.gt_mask, batch.gt_label))


def _scores(model: AdaCLIPModel, batch: ImageBatch, n_images: int = 5) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        output = model(batch.image[:n_images], batch.class_name[:n_images])
    return torch.cat([output.pred_score, output.anomaly_map.flatten()])


class FrozenClipCheck(Callback):
    """Checks at every step that the CLIP is in eval mode, frozen, and gets no gradient."""

    def __init__(self) -> None:
        self.checked_steps = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        clip = pl_module.model.clip
        assert not any(module.training for module in clip.modules())
        assert not any(parameter.requires_grad for parameter in clip.parameters())
        assert pl_module.model.patch_token_layer.training

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert all(parameter.grad is None for parameter in pl_module.model.clip.parameters())
        assert pl_module.model.text_prompter.static_prompts[0].grad is None
        self.checked_steps += 1


def test_training_lowers_the_loss_keeps_the_clip_and_reloads_to_identical_scores(
    micro_weights: Path, tmp_path: Path
) -> None:
    model = _model(micro_weights)
    batch = _tire_batch(model)
    loss_before = _dataset_loss(model, batch)
    unused_prompt = model.model.text_prompter.static_prompts[0].detach().clone()
    check = FrozenClipCheck()

    result = train(
        model,
        _data(train=[_tire(mosaic_probability=0.2)], batch_size=8),
        results_dir=tmp_path,
        name="tire",
        seed=0,
        trainer_arguments={**CPU, "max_epochs": 2, "callbacks": [check]},
    )

    assert check.checked_steps == 4  # 2 epochs x 2 batches
    loss_after = _dataset_loss(model, batch)
    print(f"loss on the 15 tire images: {loss_before:.4f} before, {loss_after:.4f} after training")
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    fresh_clip = AdaCLIPModel(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, k_clusters=4
    ).clip
    for key, value in fresh_clip.state_dict().items():
        assert torch.equal(model.model.clip.state_dict()[key], value), key  # bit for bit
    # Never used, so never changed (no gradient, hence no weight decay either).
    assert torch.equal(model.model.text_prompter.static_prompts[0], unused_prompt)

    assert result.run_dir == (tmp_path / "AdaCLIP" / "training" / "tire" / "v0").resolve()
    assert result.lightning_checkpoint.name == "last.ckpt"
    lightning_state = torch.load(result.lightning_checkpoint, weights_only=False)["state_dict"]
    assert not any(key.startswith("model.clip.") for key in lightning_state)  # small: no frozen CLIP inside
    tensors, config = read_checkpoint(result.checkpoint)
    assert set(tensors) == set(model.model.trainable_state_dict())
    assert config["image_size"] == 112 and config["backbone"]["embed_dim"] == MICRO_BACKBONE["embed_dim"]
    released = torch.load(result.released_checkpoint, weights_only=True)
    assert all(key.startswith(RELEASED_PREFIX) for key in released)

    expected = _scores(model.model, batch)
    for checkpoint in (result.checkpoint, result.released_checkpoint):
        reloaded = AdaCLIPModel(
            backbone=MICRO_BACKBONE,
            backbone_weights=str(micro_weights),
            image_size=112,
            k_clusters=4,
            checkpoint=checkpoint,
        )
        assert torch.equal(_scores(reloaded, batch), expected)
    module = _model(micro_weights, seed=1, checkpoint=str(result.checkpoint))
    assert torch.equal(_scores(module.model, batch), expected)


def test_same_seed_same_trained_tensors(micro_weights: Path, tmp_path: Path) -> None:
    def run(seed: int, name: str) -> dict[str, torch.Tensor]:
        from lightning import seed_everything

        seed_everything(seed)
        model = AdaCLIP(
            backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, prompts={"k_clusters": 4}
        )
        result = train(
            model,
            _data(train=[_tire(mosaic_probability=0.5)], batch_size=3),
            results_dir=tmp_path,
            name=name,
            seed=seed,
            trainer_arguments={**CPU, "max_epochs": 1, "limit_train_batches": 1},
        )
        return read_checkpoint(result.checkpoint)[0]

    first, second = run(7, "a"), run(7, "b")
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_resume_continues_from_the_last_checkpoint(micro_weights: Path, tmp_path: Path) -> None:
    """An interrupted run resumed in its folder ends where an uninterrupted run ends (fixed order, no mosaic)."""
    arguments = {**CPU, "limit_train_batches": 1}  # one step per epoch: the second step needs the restored AdamW state

    def data() -> AuxiliaryDataModule:
        return _data(shuffle=False)

    two_epochs, one_epoch = dict(arguments, max_epochs=2), dict(arguments, max_epochs=1)
    straight = train(_model(micro_weights), data(), results_dir=tmp_path, name="straight", trainer_arguments=two_epochs)
    first = train(_model(micro_weights), data(), results_dir=tmp_path, name="cut", trainer_arguments=one_epoch)
    resumed = train(_model(micro_weights), data(), resume=first.run_dir.parent / "latest", trainer_arguments=two_epochs)
    assert resumed.run_dir == first.run_dir  # the same folder, no new version
    assert not (first.run_dir.parent / "v1").exists()
    assert resumed.checkpoint.name == "adaclip-v1.pt" and first.checkpoint.is_file()  # nothing overwritten
    expected, _ = read_checkpoint(straight.checkpoint)
    for key, value in read_checkpoint(resumed.checkpoint)[0].items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7, msg=key)
    with pytest.raises(FileNotFoundError, match=r"Cannot resume .*last.ckpt does not exist"):
        train(_model(micro_weights), data(), resume=tmp_path / "nothing", trainer_arguments=arguments)


def test_validation_metrics_select_the_best_checkpoint(micro_weights: Path, tmp_path: Path) -> None:
    result = train(
        _model(micro_weights),
        _data(val=[_tire()], eval_batch_size=15),
        results_dir=tmp_path,
        checkpointing=CheckpointSettings(monitor="pixel_AUROC", mode="max"),
        val_metrics=["image_AUROC", "pixel_AUROC"],
        trainer_arguments={
            **CPU,
            "max_epochs": 2,
            "limit_train_batches": 2,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
        },
    )
    rows = list(csv.DictReader((result.run_dir / "logs" / "version_0" / "metrics.csv").open()))
    assert any(row.get("train_loss_step") for row in rows) and any(row.get("train_loss_epoch") for row in rows)
    per_epoch = {int(row["epoch"]): float(row["pixel_AUROC"]) for row in rows if row.get("pixel_AUROC")}
    assert sorted(per_epoch) == [0, 1]
    assert all(row.get("image_AUROC") for row in rows if row.get("pixel_AUROC"))
    best_epoch = max(per_epoch, key=per_epoch.get)
    assert result.best_score == pytest.approx(per_epoch[best_epoch], abs=1e-6)
    assert result.lightning_checkpoint.name.startswith(f"best-epoch={best_epoch}-pixel_AUROC=")
    exported, _ = read_checkpoint(result.checkpoint)
    best = trainable_tensors_of(result.lightning_checkpoint, _model(micro_weights))
    assert all(torch.equal(value, best[key]) for key, value in exported.items())


@pytest.mark.parametrize(
    ("settings", "metrics", "trainer_arguments", "validation", "message"),
    [
        (CheckpointSettings(monitor="pixel_AUROC"), None, {}, False, r"needs validation data"),
        (CheckpointSettings(monitor="pixel_AUPR"), None, {}, True, r"neither a validation metric.*nor a loss"),
        (None, ["pixel_AUROCC"], {}, True, r"Unknown validation metric 'pixel_AUROCC'"),
        (None, ["image_AUPRO"], {}, True, r"AUPRO only at pixel level"),
        (CheckpointSettings(mode="best"), None, {}, False, r"mode must be 'max' or 'min'"),
        (None, None, {"default_root_dir": "x"}, False, r"\['default_root_dir'\] are set by the training run"),
    ],
)
def test_bad_training_settings_are_clear_errors(
    micro_weights: Path,
    tmp_path: Path,
    settings: CheckpointSettings | None,
    metrics: list[str] | None,
    trainer_arguments: dict,
    validation: bool,
    message: str,
) -> None:
    data = _data(val=[_tire()] if validation else None)
    extra = {"val_metrics": metrics} if metrics is not None else {}
    with pytest.raises(ValueError, match=message):
        train(
            _model(micro_weights),
            data,
            results_dir=tmp_path,
            checkpointing=settings,
            trainer_arguments={**CPU, **trainer_arguments},
            **extra,
        )


# ------------------------------------------------------------------------------------------------------------------
# The configs and the command line
# ------------------------------------------------------------------------------------------------------------------
CONFIG_DIR = PROJECT_ROOT / "configs" / "train"
PROTOCOL_CONFIGS = ("mvtec_colondb.yaml", "visa_clinicdb.yaml", "all_datasets.yaml")  # the released checkpoints


def _stand_in(source: dict[str, Any], folder_root: Path, trees_root: Path) -> dict[str, Any]:
    """Point a config's data source at local stand-in data.

    MVTec AD and VisA read the tire sample, Folder sources a generated Folder data set, the paper's other data sets a
    generated copy of their first category in their own layout (tests/data/paper_layouts.py).
    """
    if source["dataset"] == "Folder":
        folders = {"abnormal_dir": "bad", "mask_dir": "masks", "normal_test_dir": "good"}
        return {**source, "root": str(folder_root), **folders}
    if source["dataset"] in ("MVTecAD", "Visa"):
        return {**source, "root": str(TIRE_ROOT), "categories": ["tire"]}
    category = PAPER_DATASETS[source["dataset"]].categories[0]
    tree = write_dataset_tree(source["dataset"], trees_root, [category])
    return {**source, "root": str(tree.root), "categories": [category]}


def _offline_config(name: str, micro_weights: Path, folder_root: Path, results_dir: Path, **trainer: Any) -> Path:
    config = yaml.safe_load((CONFIG_DIR / name).read_text())
    config["model"].update(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, checkpoint=None
    )
    data = config["data"]
    trees_root = results_dir / "stand_in_data"
    data["train"] = [_stand_in(source, folder_root, trees_root) for source in data["train"]]
    data["val"] = [_stand_in(source, folder_root, trees_root) for source in data.get("val") or []]
    data.update(batch_size=4, eval_batch_size=8, num_workers=0)
    config["trainer"].update(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, enable_model_summary=False
    )
    config["trainer"].update(trainer)
    config["results_dir"] = str(results_dir)
    path = results_dir / f"offline_{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("folder"), n_good=3, n_bad=4)


def test_there_are_the_three_released_protocols_and_a_folder_example() -> None:
    configs = {path.name: yaml.safe_load(path.read_text()) for path in CONFIG_DIR.glob("*.yaml")}
    assert set(configs) == {*PROTOCOL_CONFIGS, "custom_folder.yaml"}
    # The three released checkpoints: MVTec AD + ColonDB, VisA + ClinicDB (README "Corrections"), all 14 data sets.
    assert {source["dataset"] for source in configs["mvtec_colondb.yaml"]["data"]["train"]} == {"MVTecAD", "ColonDB"}
    assert {source["dataset"] for source in configs["visa_clinicdb.yaml"]["data"]["train"]} == {"Visa", "ClinicDB"}
    assert [source["dataset"] for source in configs["all_datasets.yaml"]["data"]["train"]] == list(PAPER_DATASETS)
    # Each protocol validates on the whole data set its checkpoint is tested on, as the authors' train.py does.
    assert [(source["dataset"], source["categories"]) for source in configs["mvtec_colondb.yaml"]["data"]["val"]] == [
        ("Visa", None)
    ]
    assert [(source["dataset"], source["categories"]) for source in configs["visa_clinicdb.yaml"]["data"]["val"]] == [
        ("MVTecAD", None)
    ]
    masks = {
        source["dataset"]: source.get("missing_masks", "error")
        for source in configs["all_datasets.yaml"]["data"]["train"]
    }
    assert {name for name, value in masks.items() if value == "empty"} == {"HeadCT", "BrainMRI", "Br35H"}
    for config in configs.values():
        assert config["optimizer"] == {"lr": 0.01, "betas": [0.5, 0.999], "weight_decay": 0.01}
        assert config["trainer"]["max_epochs"] == 5


@pytest.mark.parametrize("name", [*PROTOCOL_CONFIGS, "custom_folder.yaml"])
def test_every_config_setting_is_commented(name: str) -> None:
    for number, line in enumerate((CONFIG_DIR / name).read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # comments and section headers
        assert "#" in line, f"{name}:{number} has no comment: {line!r}"


@pytest.mark.parametrize("name", [*PROTOCOL_CONFIGS, "custom_folder.yaml"])
def test_configs_run_offline_on_stand_in_data(
    name: str, micro_weights: Path, folder_root: Path, tmp_path: Path
) -> None:
    """Each config as shipped (bf16-mixed included, on the CPU), with tiny backbone and local stand-in data."""
    config = _offline_config(name, micro_weights, folder_root, tmp_path)
    assert cli_main(["train", "--config", str(config)]) == 0  # what `anomalib-adaclip train --config ...` runs
    run_dirs = list((tmp_path / "AdaCLIP" / "training").glob("*/v0"))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    for produced in ("adaclip.pt", "adaclip_released_layout.pth", "config.yaml", "checkpoints/last.ckpt"):
        assert (run_dir / produced).exists(), produced
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed" and saved["seed"] == 111
    reloaded = AdaCLIPModel(
        backbone=MICRO_BACKBONE, backbone_weights=str(micro_weights), image_size=112, checkpoint=run_dir / "adaclip.pt"
    )
    assert set(reloaded.trainable_state_dict()) == set(read_checkpoint(run_dir / "adaclip.pt")[0])


def test_wrong_objects_and_names_are_clear_errors(micro_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"`datamodule` must be an anomalib_adaclip.data.AuxiliaryDataModule"):
        train(_model(micro_weights), object(), results_dir=tmp_path)
    with pytest.raises(TypeError, match=r"`model` must be an anomalib_adaclip.AdaCLIP"):
        train(object(), _data(), results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`name` must be a plain folder name"):
        train(_model(micro_weights), _data(), results_dir=tmp_path, name="../elsewhere")


def test_cli_resume_refuses_a_second_config(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path), "--config", "x.yaml"])


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_single_process_training(
    micro_weights: Path, folder_root: Path, tmp_path: Path
) -> None:
    """``anomalib-adaclip train`` (subprocess) with 2 DDP processes x batch 2 equals 1 process x batch 4.

    Without shuffling and mosaic, rank 0 sees images 0, 2, ... and rank 1 images 1, 3, ...: each step averages the
    gradients of the same four images as one batch of four does (the loss is a mean over images).
    """
    overrides = {"precision": "32-true", "limit_train_batches": 2, "enable_progress_bar": False}
    config = _offline_config("mvtec_colondb.yaml", micro_weights, folder_root, tmp_path, **overrides)
    content = yaml.safe_load(config.read_text())
    content["data"].update(train=[{**content["data"]["train"][0], "mosaic_probability": 0.0}], val=None, shuffle=False)
    config.write_text(yaml.safe_dump(content, sort_keys=False))
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "anomalib_adaclip", "train", "--config", str(config), "--name", "ddp"]
    command += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", "2"]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "AdaCLIP checkpoint:" in completed.stdout
    ddp_runs = list((tmp_path / "AdaCLIP" / "training" / "ddp").glob("v*"))
    assert [run.name for run in ddp_runs] == ["v0"]  # one run folder for both processes

    assert main(["--config", str(config), "--name", "single", "--trainer.devices", "1", "--data.batch_size", "4"]) == 0
    ddp, _ = read_checkpoint(ddp_runs[0] / "adaclip.pt")
    single, _ = read_checkpoint(tmp_path / "AdaCLIP" / "training" / "single" / "v0" / "adaclip.pt")
    for key, value in single.items():
        # The all-reduce sums the two halves' gradients in another order than one batch of four; AdamW divides by
        # sqrt(v), which magnifies last-bit differences of small gradients (1e-5 measured on an AMD EPYC host).
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-4, msg=lambda text, key=key: f"{key}: {text}")
