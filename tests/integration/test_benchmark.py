"""``anomalib-adaclip benchmark``: a grid of anomalib models x data sets, run through anomalib's Engine and Evaluator.

The end-to-end test runs the command (in this process, through ``anomalib_adaclip.cli.main``) on the MVTec 3D tire
sample and a generated ``Folder`` data set with four models:

- AdaCLIP on a tiny random CLIP (MICRO_BACKBONE at 112 px, weights in a file);
- anomalib's own ``WinClip``, unchanged. It builds its CLIP with
  ``open_clip.create_model_and_transforms("ViT-B-16-plus-240", pretrained="laion400m_e31")``, which downloads about
  800 MB from the hub. For this test process only (pytest's ``monkeypatch``), that function returns a tiny random CLIP
  with the interface WinClip uses (240 px input, an 8 x 8 patch grid, open_clip's transforms); the package code
  patches nothing;
- anomalib's ``Padim`` with a random ResNet-18 at 64 px: a one-class model, so the benchmark fits it first;
- AdaCLIP with a checkpoint file that does not exist: the forced failure of its two runs, which must be recorded
  while the grid goes on (the first one fails in the middle of the grid).

It then reruns the command on the same folder (finished runs are skipped, the failed one is tried again, nothing is
overwritten) and once more with a changed model configuration (refused). The numbers mean nothing; AdaCLIP's image
metrics on the tire sample are checked against scikit-learn on the model's own scores.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
import yaml
from open_clip.model import CLIP
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anomalib_adaclip import AdaCLIP, cli
from anomalib_adaclip.benchmark.compare import BENCHMARK_METRICS, RunRecord
from anomalib_adaclip.data.synthetic import generate_defect_dataset
from anomalib_adaclip.weights import save_checkpoint
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT
from tests.helpers import adaclip_entry, clip_normalised, folder_entry, make_adaclip

# A stand-in for WinCLIP's ViT-B-16-plus-240: the same input size, a 240 / 30 = 8 x 8 patch grid (WinCLIP's 2 x 2 and
# 3 x 3 windows fit), two blocks per tower.
TINY_WINCLIP_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 240, "layers": 2, "width": 64, "head_width": 32, "patch_size": 30},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
ADACLIP_SIZE = 112
MISSING_CHECKPOINT = "/nonexistent/adaclip_prompts.pt"


@contextlib.contextmanager
def offline_winclip() -> Any:
    """Within the block, open_clip builds a tiny random CLIP instead of downloading WinCLIP's weights."""
    calls: list[tuple[str, Any]] = []

    def create_model_and_transforms(model_name: str, pretrained: str | None = None, **kwargs: Any) -> tuple:
        calls.append((model_name, pretrained))
        torch.manual_seed(0)
        transform = open_clip.image_transform(240, is_train=False)
        return CLIP(**TINY_WINCLIP_CLIP), transform, transform

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(open_clip, "create_model_and_transforms", create_model_and_transforms)
        yield calls


def run_command(arguments: list[str]) -> SimpleNamespace:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_code = cli.main(["benchmark", *arguments])
    return SimpleNamespace(exit_code=exit_code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def tire_entry(eval_batch_size: int) -> dict[str, Any]:
    """The tire sample as a benchmark data entry (MVTec layout, named MVTecAD): its one category, no loader workers."""
    return {
        "class_path": "anomalib.data.MVTecAD",
        "init_args": {"root": str(TIRE_ROOT), "num_workers": 0, "eval_batch_size": eval_batch_size},
        "categories": ["tire"],
    }


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*.json")
    }


def grid_config(root: Path, weights: Path, generated: Path, image_size: int = ADACLIP_SIZE) -> dict[str, Any]:
    adaclip = {
        "backbone": MICRO_BACKBONE,
        "backbone_weights": str(weights),
        "image_size": image_size,
        "prompts": {"k_clusters": 4},
    }
    small_resize = {
        "class_path": "anomalib.pre_processing.PreProcessor",
        "init_args": {"transform": {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [64, 64]}}},
    }
    return {
        "output": str(root / "benchmark"),
        "seeds": [0],
        "engine": {"accelerator": "cpu"},
        "models": [
            {"name": "AdaCLIP", "class_path": "anomalib_adaclip.AdaCLIP", "init_args": adaclip},
            {"name": "WinCLIP", "class_path": "anomalib.models.WinClip"},
            {
                "name": "PaDiM",
                "class_path": "Padim",  # a short name, found in anomalib.models
                "init_args": {
                    "backbone": "resnet18",
                    "pre_trained": False,  # random weights: no download
                    "layers": ["layer1"],
                    "n_features": 16,
                    "pre_processor": small_resize,  # a nested class_path block, as in anomalib's configs
                },
            },
            {
                "name": "AdaCLIP-missing-prompts",
                "class_path": "anomalib_adaclip.AdaCLIP",
                "init_args": {**adaclip, "checkpoint": MISSING_CHECKPOINT},
            },
        ],
        "data": [
            tire_entry(8),
            {
                "class_path": "Folder",
                "init_args": {
                    "name": "generated",
                    "root": str(generated / "{category}"),
                    "normal_dir": "train/good",
                    "normal_test_dir": "test/good",
                    "abnormal_dir": "test/defect",
                    "mask_dir": "ground_truth/defect",
                    "val_split_mode": "same_as_test",
                    "num_workers": 0,
                },
                "categories": ["widget"],
            },
        ],
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, micro_weights: Path) -> SimpleNamespace:
    """The benchmark run three times on one folder: first, rerun, and rerun with a changed AdaCLIP configuration."""
    root = tmp_path_factory.mktemp("benchmark")
    torch.manual_seed(0)
    weights = micro_weights
    generated = root / "generated"
    generate_defect_dataset(generated, "widget", n_train=2, n_good=3, n_defect=3, size=96)
    config_file = root / "grid.yaml"
    config_file.write_text(yaml.safe_dump(grid_config(root, weights, generated)))
    output = root / "benchmark"

    with offline_winclip() as winclip_calls:
        first = run_command(["--config", str(config_file)])
        after_first = snapshot(output / "runs")
        first_report = {path.name: path.read_bytes() for path in (output / "reports" / "v0").iterdir()}
        rerun = run_command(["--config", str(config_file)])
        changed_file = root / "changed.yaml"
        changed_file.write_text(yaml.safe_dump(grid_config(root, weights, generated, image_size=140)))
        changed = run_command(["--config", str(changed_file)])
    return SimpleNamespace(
        output=output,
        weights=weights,
        first=first,
        rerun=rerun,
        changed=changed,
        after_first=after_first,
        first_report=first_report,
        winclip_calls=winclip_calls,
        report=output / "reports" / "v0",
    )


def result_rows(grid: SimpleNamespace) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(row["dataset"], row["category"], row["model"]): row for row in read_csv(grid.report / "results.csv")}


MODELS = ("AdaCLIP", "WinCLIP", "PaDiM", "AdaCLIP-missing-prompts")


def test_results_csv_has_every_category_and_model_and_the_means(grid: SimpleNamespace) -> None:
    assert grid.first.exit_code == 1, grid.first.stderr[-3000:]  # two runs failed, the others finished
    rows = result_rows(grid)
    expected = {
        (dataset, category, model)
        for dataset, category in [
            ("MVTecAD", "tire"),
            ("MVTecAD", "mean"),
            ("generated", "widget"),
            ("generated", "mean"),
        ]
        for model in MODELS
    }
    assert set(rows) == expected
    for (dataset, category, model), row in rows.items():
        failed = model == "AdaCLIP-missing-prompts"
        assert row["runs_failed"] == ("1" if failed else "0"), (dataset, category, model)
        for name in BENCHMARK_METRICS:
            if failed:
                assert row[name] == ""
            else:
                assert 0.0 <= float(row[name]) <= 1.0, (dataset, category, model, name)
            assert row[f"{name}_std"] == ""  # one seed
        if category == "mean" and not failed:  # one category per data set: the mean is that category's value
            single = rows[(dataset, "tire" if dataset == "MVTecAD" else "widget", model)]
            assert all(row[name] == single[name] for name in BENCHMARK_METRICS)


def test_adaclip_image_metrics_equal_scikit_learn_on_the_models_own_scores(grid: SimpleNamespace) -> None:
    # The benchmark seeds with 0 before building each model: the same seed gives the same random prompts.
    torch.manual_seed(0)
    model = AdaCLIP(
        backbone=MICRO_BACKBONE, backbone_weights=str(grid.weights), image_size=ADACLIP_SIZE, prompts={"k_clusters": 4}
    ).model.eval()
    paths = sorted((TIRE_ROOT / "tire" / "test").rglob("*.png"))
    labels = np.array([int(path.parent.name != "good") for path in paths])
    with torch.no_grad():
        scores = model(torch.cat([clip_normalised(path) for path in paths]), ["tire"] * len(paths)).pred_score.numpy()
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1_max = np.max(2 * precision * recall / np.clip(precision + recall, 1e-12, None))
    record = json.loads((grid.output / "runs" / "AdaCLIP" / "MVTecAD" / "tire" / "seed0.json").read_text())
    assert record["status"] == "finished" and record["learning_type"] == "zero_shot"
    assert record["fit_seconds"] is None  # zero-shot: tested, never fitted
    assert record["metrics"]["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)
    assert record["metrics"]["image_AUPR"] == pytest.approx(average_precision_score(labels, scores), abs=1e-4)
    assert record["metrics"]["image_F1Max"] == pytest.approx(f1_max, abs=1e-4)
    csv_row = result_rows(grid)[("MVTecAD", "tire", "AdaCLIP")]
    assert float(csv_row["image_AUROC"]) == pytest.approx(record["metrics"]["image_AUROC"], abs=1e-6)


def test_only_the_one_class_model_is_fitted_and_winclip_built_its_own_clip(grid: SimpleNamespace) -> None:
    runs = {(row["model"], row["dataset"]): row for row in read_csv(grid.report / "runs.csv")}
    for dataset in ("MVTecAD", "generated"):
        assert runs[("PaDiM", dataset)]["learning_type"] == "one_class"
        assert float(runs[("PaDiM", dataset)]["fit_seconds"]) > 0
        for model in ("AdaCLIP", "WinCLIP"):
            assert runs[(model, dataset)]["learning_type"] == "zero_shot"
            assert runs[(model, dataset)]["fit_seconds"] == ""
    # WinClip ran unchanged: it asked open_clip for its own backbone, once per run (plus once in the rerun: none).
    assert grid.winclip_calls == [("ViT-B-16-plus-240", "laion400m_e31")] * 2


def test_markdown_tables_in_percent_and_the_failed_run(grid: SimpleNamespace) -> None:
    text = (grid.report / "results.md").read_text()
    assert "## MVTecAD" in text and "## generated" in text and "## Failed runs" in text
    header = "| Category | Model | image AUROC | image AP | image F1-max | pixel AUROC | pixel AUPRO | pixel F1-max |"
    assert text.count(header) == 2
    rows = result_rows(grid)
    for (_, category, model), row in rows.items():
        values = [f"{100 * float(row[name]):.1f}" if row[name] else "failed" for name in BENCHMARK_METRICS]
        if category == "mean":
            label = "**mean**" if row["categories"] == "1" else "**mean** (0 of 1)†"
            bold = [f"**{value}**" if value != "failed" else value for value in values]
            line = f"| {label} | **{model}** | " + " | ".join(bold) + " |"
        else:
            line = f"| {category} | {model} | " + " | ".join(values) + " |"
        assert line in text, line
    failed_section = text.split("## Failed runs", 1)[1]
    failures = [line for line in failed_section.splitlines() if line.startswith("| AdaCLIP-missing-prompts | ")]
    assert "| AdaCLIP-missing-prompts | AdaCLIP | no result | off |" in text  # the models table: it ran, no result
    assert [line.split(" | ")[1:3] for line in failures] == [["MVTecAD", "tire"], ["generated", "widget"]]
    assert all("FileNotFoundError" in line and MISSING_CHECKPOINT in line for line in failures)


def test_a_plot_per_data_set(grid: SimpleNamespace) -> None:
    for dataset in ("MVTecAD", "generated"):
        path = grid.report / f"plot_{dataset}.png"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 6 * 150  # a panel per metric
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 10  # drawn, not blank


def test_failed_run_is_recorded_with_its_error_and_the_grid_goes_on(grid: SimpleNamespace) -> None:
    folder = grid.output / "runs" / "AdaCLIP-missing-prompts" / "MVTecAD" / "tire"
    record = RunRecord.read(folder / "seed0.failed.json")
    assert record.status == "failed" and not record.metrics and not (folder / "seed0.json").exists()
    assert record.error.startswith("FileNotFoundError") and MISSING_CHECKPOINT in record.error
    assert "Traceback" in record.traceback
    assert "2 run(s) failed" in grid.first.stderr
    # The runs after the failed one in the grid order (every model on the Folder data) still ran.
    runs = read_csv(grid.report / "runs.csv")
    assert [(row["dataset"], row["model"], row["status"]) for row in runs] == [
        (dataset, model, "failed" if model == "AdaCLIP-missing-prompts" else "finished")
        for dataset in ("MVTecAD", "generated")
        for model in MODELS
    ]
    assert all(row["error"] == "" for row in runs if row["status"] == "finished")


def test_rerun_skips_finished_runs_and_overwrites_nothing(grid: SimpleNamespace) -> None:
    assert grid.rerun.exit_code == 1
    assert "Runs: 2 executed, 6 skipped (finished earlier)." in grid.rerun.stdout
    after = snapshot(grid.output / "runs")
    for name, content in grid.after_first.items():
        assert after[name] == content, name  # same bytes, same modification time
    new = sorted(set(after) - set(grid.after_first))
    assert new == [  # the retried failures
        "AdaCLIP-missing-prompts/MVTecAD/tire/seed0.failed-v1.json",
        "AdaCLIP-missing-prompts/generated/widget/seed0.failed-v1.json",
    ]
    reports = grid.output / "reports"
    assert sorted(path.name for path in reports.iterdir()) == ["latest", "v0", "v1"]
    assert (reports / "latest").resolve() == (reports / "v1").resolve()
    assert {path.name: path.read_bytes() for path in (reports / "v0").iterdir()} == grid.first_report
    assert (reports / "v1" / "results.csv").read_bytes() == grid.first_report["results.csv"]


def test_rerun_with_another_configuration_in_the_same_folder_is_refused(grid: SimpleNamespace) -> None:
    assert grid.changed.exit_code == 2
    assert "another configuration" in grid.changed.stderr
    assert "AdaCLIP · MVTecAD/tire · seed 0" in grid.changed.stderr and "'image_size': 140" in grid.changed.stderr
    assert not (grid.output / "reports" / "v2").exists()


# ----------------------------------------------------------------------------------------------------------------------
# score_normalization: metrics on raw outputs (default) or after anomalib's post-processing
# ----------------------------------------------------------------------------------------------------------------------
# With seed 2 the micro model's random prompts score the generated images so that anomalib's min-max normalisation
# clamps several scores to 1: the ties change the AUROC, so the two settings give different numbers (checked below).
NORMALIZATION_SEED = 2


def f1_adaptive_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (``score >= threshold`` is anomalous); the lowest one among ties."""
    best_f1, best_threshold = -1.0, math.nan
    for threshold in np.unique(scores):  # ascending
        predicted = scores >= threshold
        true_positives = np.sum(predicted & (labels == 1))
        f1 = (
            2
            * true_positives
            / (2 * true_positives + np.sum(predicted & (labels == 0)) + np.sum(~predicted & (labels == 1)))
        )
        if f1 > best_f1:
            best_f1, best_threshold = f1, float(threshold)
    return best_threshold


@pytest.fixture(scope="module")
def normalization_runs(tmp_path_factory: pytest.TempPathFactory, micro_weights: Path) -> SimpleNamespace:
    """AdaCLIP on a generated Folder data set (validation = test), once on raw outputs and once normalised."""
    root = tmp_path_factory.mktemp("normalization")
    torch.manual_seed(0)
    weights = micro_weights
    generated = root / "generated"
    generate_defect_dataset(generated, "widget", n_train=2, n_good=3, n_defect=3, size=96)
    config = grid_config(root, weights, generated)
    config["models"] = config["models"][:1]  # AdaCLIP
    config["data"] = config["data"][1:]  # the generated Folder data, validated on its test split
    config["seeds"] = [NORMALIZATION_SEED]
    outcomes = {}
    for normalised in (False, True):
        config_file = root / f"normalised_{normalised}.yaml"
        config_file.write_text(
            yaml.safe_dump({**config, "score_normalization": normalised, "output": str(root / str(normalised))})
        )
        outcomes[normalised] = run_command(["--config", str(config_file)])
    # The raw run's folder with the other setting: its finished run would be mixed with normalised ones.
    mixed_file = root / "mixed.yaml"
    mixed_file.write_text(yaml.safe_dump({**config, "score_normalization": True, "output": str(root / "False")}))
    mixed = run_command(["--config", str(mixed_file)])
    return SimpleNamespace(root=root, weights=weights, generated=generated, outcomes=outcomes, mixed=mixed)


def test_score_normalization_chooses_raw_or_post_processed_scores_for_the_metrics(
    normalization_runs: SimpleNamespace,
) -> None:
    runs = normalization_runs
    records = {}
    for normalised, outcome in runs.outcomes.items():
        assert outcome.exit_code == 0, outcome.stderr[-3000:]
        path = (
            runs.root / str(normalised) / "runs" / "AdaCLIP" / "generated" / "widget" / f"seed{NORMALIZATION_SEED}.json"
        )
        records[normalised] = RunRecord.read(path)
        assert records[normalised].score_normalization is normalised
    # The model's own scores, from the pre-processing written out and the benchmark's seed.
    torch.manual_seed(NORMALIZATION_SEED)
    model = AdaCLIP(
        backbone=MICRO_BACKBONE, backbone_weights=str(runs.weights), image_size=ADACLIP_SIZE, prompts={"k_clusters": 4}
    ).model.eval()
    paths = sorted((runs.generated / "widget" / "test").rglob("*.png"))
    labels = np.array([int(path.parent.name != "good") for path in paths])
    with torch.no_grad():
        raw = model(torch.cat([clip_normalised(path) for path in paths]), ["widget"] * len(paths)).pred_score.numpy()
    # anomalib's normalisation, by hand: F1-optimal threshold and min-max of the validation scores (= the test
    # scores here), threshold to 0.5, clamped to [0, 1].
    threshold = f1_adaptive_threshold(labels, raw)
    normalised = np.clip((raw - threshold) / (raw.max() - raw.min()) + 0.5, 0.0, 1.0)
    assert roc_auc_score(labels, raw) != pytest.approx(roc_auc_score(labels, normalised))  # the test can tell
    for expected, record in ((raw, records[False]), (normalised, records[True])):
        assert record.metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels, expected), abs=1e-4)
        assert record.metrics["image_AUPR"] == pytest.approx(average_precision_score(labels, expected), abs=1e-4)


def test_a_folder_of_raw_metrics_refuses_normalised_runs(normalization_runs: SimpleNamespace) -> None:
    assert normalization_runs.mixed.exit_code == 2
    assert "another configuration" in normalization_runs.mixed.stderr
    assert "score_normalization was False, is now True" in normalization_runs.mixed.stderr


# ----------------------------------------------------------------------------------------------------------------------
# The command's configuration errors (nothing runs); the configuration, store and summaries are tested in
# tests/unit/benchmark/
# ----------------------------------------------------------------------------------------------------------------------
def test_command_reports_configuration_errors_with_exit_code_2(tmp_path: Path) -> None:
    missing = run_command(["--config", str(tmp_path / "nothing.yaml")])
    assert missing.exit_code == 2 and "nothing.yaml does not exist" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"models": [adaclip_entry(init_args={"image_size": "big"})], "data": [folder_entry()]})
    )
    result = run_command(["--config", str(bad)])
    assert result.exit_code == 2 and f"{bad}: models[0] (AdaCLIP) on parts" in result.stderr


def test_benchmark_is_an_adaclip_subcommand() -> None:
    assert "benchmark" in cli.COMMANDS


def test_the_few_shot_grid_runs_adaclip_and_winclip_at_each_k(tmp_path: Path, micro_weights: Path) -> None:
    """configs/benchmark/few_shot.yaml with tiny backbones on the tire sample: every model of the k_shot axis runs.

    AnomalyDINO's DINOv2 weights cannot be downloaded here, so a random PaDiM stands in for the models fitted on
    ``train_images`` training images.
    """
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "benchmark" / "few_shot.yaml").read_text())
    tiny = {"backbone": MICRO_BACKBONE, "backbone_weights": str(micro_weights), "image_size": ADACLIP_SIZE}

    def k_shot(model: dict) -> int:  # WinCLIP's flat argument, AdaCLIP's few_shot group
        arguments = model.get("init_args", {})
        return arguments.get("k_shot", (arguments.get("few_shot") or {}).get("k_shot", 0))

    models = [model for model in config["models"] if k_shot(model) in (0, 1)]
    models = [model for model in models if "train_images" not in model]
    padim = {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1"], "n_features": 16}
    models.append({"name": "PaDiM-1shot", "class_path": "Padim", "init_args": padim, "train_images": 1})
    for model in models:
        if model["class_path"] == "anomalib_adaclip.AdaCLIP":
            few_shot = {"few_shot": {"k_shot": k_shot(model)}} if k_shot(model) else {}
            model["init_args"] = {**tiny, **few_shot, "prompts": {"k_clusters": 4}}
    config.update(
        output=str(tmp_path / "few_shot"),
        engine={"accelerator": "cpu"},
        models=models,
        data=[tire_entry(8)],
    )
    config_file = tmp_path / "few_shot.yaml"
    config_file.write_text(yaml.safe_dump(config))
    with offline_winclip():
        result = run_command(["--config", str(config_file)])
    assert result.exit_code == 0, result.stderr[-3000:]
    rows = {row["model"]: row for row in read_csv(tmp_path / "few_shot" / "reports" / "v0" / "results.csv")}
    assert set(rows) == {"AdaCLIP", "AdaCLIP-1shot", "WinCLIP", "WinCLIP-1shot", "PaDiM-1shot"}
    for name, row in rows.items():
        assert 0.0 <= float(row["image_AUROC"]) <= 1.0, name
    runs = {row["model"]: row for row in read_csv(tmp_path / "few_shot" / "reports" / "v0" / "runs.csv")}
    assert runs["PaDiM-1shot"]["fit_seconds"] and not runs["AdaCLIP-1shot"]["fit_seconds"]


@pytest.mark.slow  # two runs through the Engine, each scoring its groups in validation and test: 6-16 s on 2 cores
def test_the_mutual_scoring_grid_runs_and_records_each_mode(tmp_path: Path, micro_weights: Path) -> None:
    """configs/benchmark/mutual_scoring.yaml with tiny backbones on the tire sample, named MVTecAD: MuSc alone and fused
    run through the Engine (zero-shot AdaCLIP is left out: the other grids run it) and each run's mode is recorded. How
    the paper tables compare them with MuSc's published rows is tested in tests/unit/benchmark/test_mutual_axis.py."""
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "benchmark" / "mutual_scoring.yaml").read_text())
    tiny = {"backbone": MICRO_BACKBONE, "backbone_weights": str(micro_weights), "image_size": ADACLIP_SIZE}
    config["models"] = [model for model in config["models"] if model["name"] != "AdaCLIP"]
    for model in config["models"]:
        mutual = {"mutual": {**model["init_args"]["mutual"], "group_size": 8}}  # 15 tire images: groups of 8 and 7
        model["init_args"] = {**tiny, "prompts": {"k_clusters": 4}, **mutual}
        model.pop("init_args_by_dataset")
    config.update(
        output=str(tmp_path / "mutual"),
        engine={"accelerator": "cpu"},
        data=[tire_entry(4)],
    )
    config_file = tmp_path / "mutual.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run_command(["--config", str(config_file)])
    assert result.exit_code == 0, result.stderr[-3000:]
    report = tmp_path / "mutual" / "reports" / "v0"
    runs = {row["model"]: row for row in read_csv(report / "runs.csv")}
    assert sorted(runs) == ["AdaCLIP-MuSc", "AdaCLIP-mutual"]
    assert all(row["status"] == "finished" for row in runs.values())
    assert {name: row["mode"] for name, row in runs.items()} == dict.fromkeys(runs, "mutual_scoring")
    for row in runs.values():
        assert 0.0 <= float(row["image_AUROC"]) <= 1.0 and 0.0 <= float(row["pixel_AUROC"]) <= 1.0
    markdown = (report / "results.md").read_text()
    assert "| AdaCLIP-MuSc | AdaCLIP | mutual scoring | weight 1.0, group_size 8 |" in markdown
    # MuSc alone and fused are different outputs of the same CLIP passes (the fused map mixes in AdaCLIP's).
    assert runs["AdaCLIP-MuSc"]["pixel_AUROC"] != runs["AdaCLIP-mutual"]["pixel_AUROC"]


def test_the_online_grid_scores_each_seed_in_its_own_order(
    tmp_path: Path, micro_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configs/benchmark/online.yaml with tiny backbones on the tire sample, named MVTecAD, two seeds: RareCLIP's
    setting (rarity weight 1) scores the test images in a seeded order and records the mode "online", while AdaCLIP
    alone sees the data set's order on both seeds (and gives the same numbers). The order each run saw is recorded from
    the model's steps. How the paper tables compare the runs with RareCLIP's published rows:
    tests/unit/benchmark/test_online_mode.py.
    """
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "benchmark" / "online.yaml").read_text())
    # Prompts from a file: the seed changes the order only (random prompts would be drawn with each run's seed).
    prompts = tmp_path / "prompts.pt"
    donor = make_adaclip(micro_weights, prompts={"k_clusters": 4}).model
    save_checkpoint(donor.trainable_state_dict(), donor.config.to_dict(), prompts)
    tiny = {"backbone": MICRO_BACKBONE, "backbone_weights": str(micro_weights), "image_size": ADACLIP_SIZE}
    tiny["checkpoint"] = str(prompts)
    scoring = {"text_layers": [2, 4], "rarity_layers": [1, 3], "sigma": 1.0, "rs_freq": 2, "keep_ftime": 2.0}
    config["models"] = [model for model in config["models"] if model["name"] != "AdaCLIP-rarity"]
    for model in config["models"]:
        rarity = model["init_args"].get("rarity")
        group = {"rarity": {"weight": rarity["weight"], "text_branch": "adaclip", "scoring": scoring}} if rarity else {}
        model["init_args"] = {**tiny, **group}  # no TPB file here: AdaCLIP's map as the text side
        model.pop("init_args_by_dataset")
    config.update(
        output=str(tmp_path / "online"),
        seeds=[0, 1],
        engine={"accelerator": "cpu"},
        data=[tire_entry(4)],
    )
    config_file = tmp_path / "online.yaml"
    config_file.write_text(yaml.safe_dump(config))
    steps: list[tuple[str, bool, list[str], list[float]]] = []

    def recorded(stage: str) -> Any:
        original = getattr(AdaCLIP, f"{stage}_step")

        def step(self: AdaCLIP, batch: Any, *args: Any, **kwargs: Any) -> Any:
            output = original(self, batch, *args, **kwargs)
            paths = [str(Path(path).relative_to(TIRE_ROOT)) for path in batch.image_path]
            steps.append((stage, self.rarity is not None, paths, output.pred_score.tolist()))
            return output

        return step

    for stage in ("validation", "test"):
        monkeypatch.setattr(AdaCLIP, f"{stage}_step", recorded(stage))
    result = run_command(["--config", str(config_file)])
    assert result.exit_code == 0, result.stderr[-3000:]
    runs = read_csv(tmp_path / "online" / "reports" / "v0" / "runs.csv")
    assert [(row["model"], row["seed"], row["mode"]) for row in runs] == [
        ("AdaCLIP", "0", "zero_shot"), ("AdaCLIP", "1", "zero_shot"),
        ("AdaCLIP-RareCLIP", "0", "online"), ("AdaCLIP-RareCLIP", "1", "online"),
    ]  # fmt: skip
    # The grid runs model by model, seed by seed: AdaCLIP validates and tests each seed, the online runs only test
    # (the validation would change none of their raw-score numbers).
    tests = [(online, paths, scores) for stage, online, paths, scores in steps if stage == "test"]
    assert [online for online, _, _ in tests] == [False] * 8 + [True] * 8  # 15 images in batches of 4, per run
    assert [online for stage, online, _, _ in steps if stage == "validation"] == [False] * 8

    def run_order(index: int) -> tuple[list[str], dict[str, float]]:
        batches = tests[4 * index : 4 * index + 4]
        order = [path for _, paths, _ in batches for path in paths]
        return order, {path: score for _, paths, scores in batches for path, score in zip(paths, scores, strict=True)}

    data_order = sorted(run_order(0)[0])
    (adaclip0, adaclip_scores0), (adaclip1, adaclip_scores1) = run_order(0), run_order(1)
    (online0, online_scores0), (online1, online_scores1) = run_order(2), run_order(3)
    assert adaclip0 == adaclip1 == data_order and adaclip_scores0 == adaclip_scores1  # untouched by the seed
    for seed, order in ((0, online0), (1, online1)):
        permutation = list(range(15))
        random.Random(seed).shuffle(permutation)
        assert order == [data_order[index] for index in permutation]
    assert online0 != online1
    # Scored against other earlier images, an image gets another rarity score; the first image of each order has an
    # empty bank (the text side alone) on both seeds, so its score does not depend on the seed.
    assert sum(online_scores0[path] != online_scores1[path] for path in data_order) >= 10
    by_seed = {row["seed"]: row for row in runs if row["model"] == "AdaCLIP-RareCLIP"}
    assert (
        by_seed["0"]["image_AUROC"] != by_seed["1"]["image_AUROC"]
        or by_seed["0"]["pixel_AUROC"] != (by_seed["1"]["pixel_AUROC"])
    )
    results = read_csv(tmp_path / "online" / "reports" / "v0" / "results.csv")
    spread = {(row["model"], row["category"]): row["pixel_AUROC_std"] for row in results}
    assert float(spread[("AdaCLIP", "mean")]) == 0.0 and float(spread[("AdaCLIP-RareCLIP", "mean")]) > 0.0


@pytest.mark.slow  # 12 runs (6 models x 2 seeds) on the 15 tire images with a 12-block CLIP: about a minute on 2 cores
def test_the_tire_grid_runs_every_mode_and_patch_rarity_finds_the_real_defects(tmp_path: Path) -> None:
    """configs/benchmark/tire.yaml as shipped (only the data root made absolute): every mode runs on both seeds with
    random weights, and each run records its mode. The independent truth: the tire sample's defects (holes, cuts,
    contamination) are patches unlike the others, so the methods that judge a patch by its rarity among other images'
    patches (mutual scoring and PaDiM) find them even on random features, while the untrained prompts cannot."""
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "benchmark" / "tire.yaml").read_text())
    config["data"][0]["init_args"]["root"] = str(TIRE_ROOT)
    config["output"] = str(tmp_path / "tire")
    config_file = tmp_path / "tire.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run_command(["--config", str(config_file)])
    assert result.exit_code == 0, result.stderr[-3000:]
    runs = read_csv(tmp_path / "tire" / "reports" / "v0" / "runs.csv")
    assert len(runs) == 12 and all(row["status"] == "finished" for row in runs)
    modes = {row["model"]: row["mode"] for row in runs}
    assert modes == {
        "AdaCLIP": "zero_shot",
        "AdaCLIP-4shot": "few_shot",
        "AdaCLIP-MuSc": "mutual_scoring",
        "AdaCLIP-rarity": "online",
        "AdaCLIP-rarity-fused": "online",
        "PaDiM-untrained": "one_class",
    }
    pixel_auroc = {(row["model"], row["seed"]): float(row["pixel_AUROC"]) for row in runs}
    for seed in ("0", "1"):
        assert pixel_auroc["AdaCLIP-MuSc", seed] > 0.9 and pixel_auroc["PaDiM-untrained", seed] > 0.9
        # Pooled over images, the rarity map is above chance (its first images are on another scale: see
        # tools/tire_rarity_localisation.py for its per-image localisation).
        assert pixel_auroc["AdaCLIP-rarity", seed] > 0.6
