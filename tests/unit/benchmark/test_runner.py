"""The job generator: a job per run of the grid (or of a shard), what is left to do, a changed folder refused.

Nothing runs: the jobs are generated, not executed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_adaclip.benchmark.config import BenchmarkConfig, BenchmarkConfigError, load_config
from anomalib_adaclip.benchmark.runner import BenchmarkJob, BenchmarkJobGenerator, check_folder, mismatches
from anomalib_adaclip.benchmark.store import RunRecord, RunStore
from tests.helpers import adaclip_entry, folder_entry


def stored(store: RunStore, config: BenchmarkConfig, index: int, status: str) -> None:
    key = config.grid()[index]
    model, data = config.model(key.model), config.dataset(key.dataset)
    store.save(
        RunRecord(
            key.model, key.dataset, key.category, key.seed, status,
            model_config=model.configuration_for(key.dataset), data_config=data.configuration_for(key.category),
        )
    )  # fmt: skip


@pytest.mark.parametrize("retry_failed", [True, False])
def test_jobs_are_the_grid_minus_the_finished_runs(tmp_path: Path, retry_failed: bool) -> None:
    config = load_config({"models": [adaclip_entry()], "data": [folder_entry()], "seeds": [0, 1]}, output=tmp_path)
    store = RunStore(tmp_path / "runs")
    stored(store, config, 0, "finished")
    stored(store, config, 1, "failed")
    generator = BenchmarkJobGenerator(config, retry_failed=retry_failed)
    check_folder(config)  # the stored runs have this configuration
    planned = list(generator.generate_jobs())
    assert [job.key for job in planned] == config.grid()
    left = [job.key for job in planned if not generator.is_done(job.key)]
    assert left == config.grid()[1 if retry_failed else 2 :]
    assert all(job == BenchmarkJob(job.key, config, retry_failed=retry_failed) for job in planned[2:])


def test_a_folder_of_another_configuration_is_refused(tmp_path: Path) -> None:
    config = load_config({"models": [adaclip_entry()], "data": [folder_entry()]}, output=tmp_path)
    store = RunStore(tmp_path / "runs")
    stored(store, config, 0, "finished")
    changed = load_config(
        {"models": [adaclip_entry(init_args={"backbone_weights": None, "image_size": 140})], "data": [folder_entry()]},
        output=tmp_path,
    )
    assert len(mismatches(changed, store)) == 1
    with pytest.raises(BenchmarkConfigError, match="another configuration") as error:
        check_folder(changed)
    assert "AdaCLIP · parts/gear · seed 0: model was" in str(error.value) and "'image_size': 140" in str(error.value)


def test_training_subset_keeps_k_seeded_training_images() -> None:
    from types import SimpleNamespace

    from anomalib.data import MVTecAD

    from anomalib_adaclip.benchmark.runner import TrainingSubset
    from tests.conftest import TIRE_ROOT

    def subset(k: int, seed: int, stage: str = "fit") -> list[str]:
        datamodule = MVTecAD(root=TIRE_ROOT, category="tire", num_workers=0)
        datamodule.setup()
        TrainingSubset(k, seed).setup(SimpleNamespace(datamodule=datamodule), None, stage)
        return list(datamodule.train_data.samples["image_path"])

    full = subset(1, 0, stage="test")  # only fitting is restricted
    assert len(full) > 2
    two = subset(2, 0)
    assert len(two) == 2 and set(two) <= set(full)
    assert subset(2, 0) == two  # the same seed draws the same images
    assert {tuple(subset(2, seed)) for seed in range(8)} != {tuple(two)}  # other seeds draw others
    with pytest.raises(ValueError, match=f"train_images={len(full) + 1}, but the training split holds only"):
        subset(len(full) + 1, 0)


def test_train_images_must_be_a_positive_count(tmp_path: Path) -> None:
    entry = adaclip_entry(train_images=0)
    with pytest.raises(BenchmarkConfigError, match="train_images must be a positive number of training images"):
        load_config({"models": [entry], "data": [folder_entry()]}, output=tmp_path)
    config = load_config({"models": [adaclip_entry(train_images=3)], "data": [folder_entry()]}, output=tmp_path)
    assert config.model("AdaCLIP").configuration_for("parts")["train_images"] == 3
