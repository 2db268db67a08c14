"""The registry of the paper's 14 data sets (``data/paper_datasets.py``): its facts, and its word on a missing one.

The facts are checked against the paper's Supplementary Table 1 and anomalib's own category lists, written out or
imported here independently of the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from anomalib.data import MPDD
from anomalib.data.datasets.image import btech, mpdd, mvtecad, visa

from anomalib_adaclip.data import ColonDB
from anomalib_adaclip.data.paper_datasets import (
    PAPER_DATASETS,
    PROCESSED_LAYOUT,
    Task,
    paper_dataset,
    prepare_or_explain,
    require_dataset,
)
from tests.data.paper_layouts import write_dataset_tree

# The paper's Supplementary Table 1 (normal, anomalous) and its task column, written out independently of the registry.
PAPER_TEST_COUNTS = {
    "MVTecAD": ((467, 1258), "both"),
    "Visa": ((962, 1200), "both"),
    "MPDD": ((176, 282), "both"),
    "BTech": ((451, 290), "both"),
    "KSDD": ((181, 74), "both"),
    "DAGM": ((6996, 1054), "both"),
    "DTDSynthetic": ((357, 947), "both"),
    "HeadCT": ((100, 100), "image"),
    "BrainMRI": ((98, 155), "image"),
    "Br35H": ((1500, 1500), "image"),
    "ISIC": ((0, 379), "pixel"),
    "ColonDB": ((0, 380), "pixel"),
    "ClinicDB": ((0, 612), "pixel"),
    "TN3K": ((0, 614), "pixel"),
}
# Categories per data set: MVTec AD 15, VisA 12, MPDD 6, BTAD 3, DAGM 10 classes, DTD-Synthetic 12, one each else.
CATEGORY_COUNTS = {"MVTecAD": 15, "Visa": 12, "MPDD": 6, "BTech": 3, "DAGM": 10, "DTDSynthetic": 12}
READ_BY_ANOMALIB = {"MVTecAD": mvtecad, "Visa": visa, "MPDD": mpdd, "BTech": btech}


def test_registry_holds_the_papers_14_data_sets() -> None:
    assert list(PAPER_DATASETS) == list(PAPER_TEST_COUNTS)
    assert sum(len(entry.categories) for entry in PAPER_DATASETS.values()) == 66
    for key, entry in PAPER_DATASETS.items():
        assert (entry.test_counts, entry.task) == PAPER_TEST_COUNTS[key]
        assert entry.default_category in entry.categories
        assert entry.source and entry.licence and entry.size and entry.default_root


def test_categories_are_spelled_as_anomalib_spells_them_and_counted_per_data_set() -> None:
    for key, entry in PAPER_DATASETS.items():
        assert len(entry.categories) == CATEGORY_COUNTS.get(key, 1), key
        assert len(set(entry.categories)) == len(entry.categories), key
    for key, module in READ_BY_ANOMALIB.items():
        assert PAPER_DATASETS[key].categories == tuple(module.CATEGORIES), key


def test_tasks_are_the_literal_values_and_decide_masks_and_normal_test_images() -> None:
    assert set(get_args(Task)) == {"image", "pixel", "both"}
    for key, entry in PAPER_DATASETS.items():
        assert entry.task in get_args(Task), key
        assert entry.has_masks is (entry.task != "image"), key
        assert (entry.test_counts[0] == 0) is (entry.task == "pixel"), key  # no normal test image: pixel-only
    assert not PAPER_DATASETS["HeadCT"].has_masks and PAPER_DATASETS["ISIC"].has_masks


def test_keys_name_the_data_modules_that_read_them() -> None:
    assert {key for key, entry in PAPER_DATASETS.items() if entry.read_by_anomalib} == set(READ_BY_ANOMALIB)
    for key, entry in PAPER_DATASETS.items():
        assert entry.key == key and entry.datamodule_class().__name__ == key
        expected_module = "anomalib.data" if key in READ_BY_ANOMALIB else "anomalib_adaclip.data"
        assert entry.datamodule == f"{expected_module}.{key}"
        assert not (entry.read_by_anomalib and entry.preparable), key  # anomalib's modules read the release itself


def test_a_data_set_is_found_by_its_key_in_any_case_and_an_unknown_one_lists_the_fourteen() -> None:
    assert paper_dataset("ksdd") is PAPER_DATASETS["KSDD"] and paper_dataset("MVTECAD") is PAPER_DATASETS["MVTecAD"]
    with pytest.raises(KeyError, match=r"unknown data set 'KSDD2'; the paper's data sets are: MVTecAD, Visa, .*TN3K"):
        paper_dataset("KSDD2")


def test_presence_is_a_category_folder_at_one_of_its_paths(tmp_path: Path) -> None:
    visa_entry = PAPER_DATASETS["Visa"]
    assert not visa_entry.is_present(tmp_path, "pcb1")
    (tmp_path / "visa_pytorch" / "pcb1").mkdir(parents=True)  # anomalib's split copy
    assert visa_entry.is_present(tmp_path, "pcb1") and not visa_entry.is_present(tmp_path, "pcb2")
    (tmp_path / "SDD").write_text("a file, not a folder")
    assert not PAPER_DATASETS["KSDD"].is_present(tmp_path, "SDD")


def test_require_dataset_before_anomalib_modules_would_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        require_dataset("Visa", tmp_path, "pcb1")
    message = str(error.value)
    assert f"neither {tmp_path / 'visa_pytorch' / 'pcb1'} nor {tmp_path / 'pcb1'} is a folder" in message
    assert "VisA_20220922.tar" in message and "split_csv/1cls.csv" in message
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "pcb1").mkdir()  # the raw download: anomalib's Visa splits it offline
    require_dataset("visa", tmp_path, "pcb1")
    with pytest.raises(FileNotFoundError, match=r"mvtec-ad.*\n.*anomalib\.data\.MVTecAD reads"):
        require_dataset("MVTecAD", tmp_path, "bottle")


def test_a_missing_preparable_data_set_names_its_source_the_command_and_the_root(tmp_path: Path) -> None:
    root = tmp_path / "datasets" / "KSDD"
    with pytest.raises(FileNotFoundError) as error:
        require_dataset("KSDD", root, "SDD")
    lines = str(error.value).splitlines()
    assert lines[0] == f"KSDD (KolektorSDD) data set not found: {root / 'SDD'} is not a folder."
    source, licence = "https://www.vicos.si/resources/kolektorsdd/", "CC BY-NC-SA 4.0 (per anomalib)"
    assert lines[1] == f"Get it from {source} (licence: {licence})."
    assert lines[2] == f"Convert it: anomalib-adaclip prepare-data KSDD --source <download> --dest {root}"
    assert f"anomalib_adaclip.data.KSDD reads {root} (its `root` argument) laid out as:" in lines
    assert "\n".join(lines).endswith(PROCESSED_LAYOUT)
    assert not (tmp_path / "datasets").exists()  # nothing created, nothing downloaded


def test_a_missing_data_set_released_in_the_processed_layout_needs_no_conversion(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        require_dataset("DTDSynthetic", tmp_path, "Woven_001")
    message = str(error.value)
    assert "Google Drive folder 10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1" in message
    assert "It needs no conversion" in message and "prepare-data" not in message
    with pytest.raises(KeyError, match="unknown data set"):
        require_dataset("Folder", tmp_path, "Woven_001")


def test_a_missing_anomalib_data_set_that_cannot_be_downloaded_says_where_to_get_it(tmp_path: Path) -> None:
    datamodule = MPDD(root=tmp_path / "MPDD", category="tubes", num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"(?s)MPDD data set not found.*Get it from .*github.com/stepanje/MPDD"):
        prepare_or_explain(datamodule)  # anomalib cannot download MPDD
    write_dataset_tree("MPDD", tmp_path, ["tubes"])
    prepare_or_explain(datamodule)  # present: anomalib's own preparation, nothing to say


def test_this_packages_data_modules_explain_a_missing_data_set_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        prepare_or_explain(ColonDB(root=tmp_path / "nowhere", num_workers=0))
    assert str(raised.value).count("data set not found") == 1, str(raised.value)
