"""The entries of a benchmark grid (``benchmark/specs.py``): arguments per data set and category, records, building.

The model entries here are small classes of this module (any class with typed constructor arguments is an entry's
class); the data entries are anomalib's ``Folder`` and ``MVTecAD``, built without reading a file.
"""

from __future__ import annotations

from argparse import ArgumentError
from pathlib import Path
from typing import Any, get_args

import pytest
from anomalib.data import Folder, MVTecAD
from torch import nn

from anomalib_adaclip.benchmark.specs import MODES, DataSpec, Mode, ModelSpec, has_placeholder, parse_arguments


class Widget:
    """A model-like class: typed arguments, AdaCLIP's first two mutual-scoring arguments, a visualizer, an evaluator."""

    def __init__(
        self,
        size: int = 3,
        head: nn.Module | None = None,
        mutual: dict[str, Any] | None = None,
        visualizer: bool = True,
        evaluator: Any = True,
    ) -> None:
        self.size, self.head, self.visualizer, self.evaluator = size, head, visualizer, evaluator
        self.mutual = mutual


class Plain:
    """A class with neither mutual scoring, nor a visualizer, nor an evaluator argument."""

    def __init__(self, size: int = 3) -> None:
        self.size = size


def widget_spec(**overrides: Any) -> ModelSpec:
    arguments: dict[str, Any] = {
        "name": "Widget",
        "class_path": f"{__name__}.Widget",
        "init_args": {"size": 4},
        "init_args_by_dataset": {"B": {"size": 5, "mutual": {"weight": 0.25}}},
        "model_class": Widget,
    }
    return ModelSpec(**{**arguments, **overrides})


def test_a_data_sets_arguments_replace_the_shared_ones_there_only() -> None:
    spec = widget_spec()
    assert spec.arguments_for("A") == {"size": 4}
    assert spec.arguments_for("B") == {"size": 5, "mutual": {"weight": 0.25}}
    assert spec.init_args == {"size": 4}  # unchanged


def test_mutual_settings_fill_in_the_constructors_defaults_and_give_the_mode() -> None:
    spec = widget_spec()
    assert spec.mutual_settings("A") is None  # mutual defaults to None: off
    assert spec.mutual_settings("B") == {"weight": 0.25, "group_size": 32}  # the group's default group size
    assert spec.mode("A", "zero_shot") == "zero_shot" and spec.mode("A", "one_class") == "one_class"
    assert spec.mode("B", "zero_shot") == "mutual_scoring"
    assert spec.mode("B", "few_shot") == "few_shot+mutual_scoring"
    plain = ModelSpec("Plain", f"{__name__}.Plain", {"mutual": {}}, {}, Plain)
    assert plain.mutual_settings("A") is None  # a class without the argument has no mode of it
    assert set(get_args(Mode)) == set(MODES)  # every mode has its name in the reports


def test_the_record_keeps_plain_json_values_and_the_training_subset() -> None:
    spec = widget_spec(init_args={"size": 4, "sizes": (1, 2), "root": Path("data/x")})
    assert spec.configuration_for("A") == {
        "class_path": f"{__name__}.Widget",
        "init_args": {"size": 4, "sizes": [1, 2], "root": "data/x"},
    }
    assert widget_spec(train_images=3).configuration_for("A")["train_images"] == 3


def test_building_types_the_arguments_and_instantiates_nested_class_paths() -> None:
    head = {"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 3}}
    spec = widget_spec(init_args={"size": 4, "head": head})
    model = spec.build("A", evaluator="the evaluator", visualize=False)
    assert isinstance(model, Widget) and model.size == 4 and model.evaluator == "the evaluator"
    assert isinstance(model.head, nn.Linear) and tuple(model.head.weight.shape) == (3, 2)
    assert model.visualizer is False  # not visualised: turned off, since init_args did not set one
    assert spec.build("B", evaluator=False, visualize=True).visualizer is True
    chosen = widget_spec(init_args={"visualizer": True}).build("A", evaluator=False, visualize=False)
    assert chosen.visualizer is True  # the entry's own choice wins


def test_a_class_without_an_evaluator_argument_gets_the_evaluator_set_after_building() -> None:
    spec = ModelSpec("Plain", f"{__name__}.Plain", {"size": 7}, {}, Plain)
    model = spec.build("A", evaluator="the evaluator", visualize=False)
    assert (model.size, model.evaluator) == (7, "the evaluator")
    assert spec.build("A", evaluator=False, visualize=False).evaluator is None


def test_argument_errors_name_the_argument_and_skipped_ones_are_refused() -> None:
    with pytest.raises(ArgumentError, match=r'Parser key "init\.size"'):
        parse_arguments(Widget, {"size": "big"}, frozenset({"evaluator"}))
    with pytest.raises(ArgumentError, match="evaluator"):
        parse_arguments(Widget, {"evaluator": False}, frozenset({"evaluator"}))  # the benchmark sets it
    with pytest.raises(ArgumentError, match="colour"):
        parse_arguments(Widget, {"colour": "red"}, frozenset())
    assert parse_arguments(Widget, {"size": 9}, frozenset({"evaluator"})).init.size == 9


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("data/{category}", True),
        ("data/category", False),
        ({"root": {"inner": ["x", "{category}/good"]}}, True),
        (("a", "b{category}"), True),
        ({"size": 3, "names": ["a", "b"]}, False),
        (3, False),
    ],
)
def test_the_category_placeholder_is_found_at_any_depth(value: Any, expected: bool) -> None:
    assert has_placeholder(value) is expected


FOLDER_ARGUMENTS = {
    "name": "parts",
    "root": "data/{category}",
    "normal_dir": "good",
    "abnormal_dir": ["bad/{category}", "worse"],
    "num_workers": 0,
    "eval_batch_size": 4,
}


def test_a_folder_entry_puts_the_category_into_its_arguments_and_records_what_changes_the_numbers() -> None:
    spec = DataSpec("parts", "anomalib.data.Folder", FOLDER_ARGUMENTS, ("gear", "bracket"), Folder)
    assert not spec.takes_category
    assert spec.arguments_for("gear") == {
        **FOLDER_ARGUMENTS,
        "root": "data/gear",
        "abnormal_dir": ["bad/gear", "worse"],
    }
    assert spec.init_args["root"] == "data/{category}"  # unchanged
    assert spec.configuration_for("gear") == {
        "class_path": "anomalib.data.Folder",
        "category": "gear",
        "init_args": {
            "name": "parts",
            "root": "data/gear",
            "normal_dir": "good",
            "abnormal_dir": ["bad/gear", "worse"],
        },
    }  # num_workers and eval_batch_size may differ between a run and its resumption
    datamodule = spec.build("gear")
    assert isinstance(datamodule, Folder) and Path(datamodule.root) == Path("data/gear")
    assert datamodule.category == "gear"  # the prompts' class name


def test_a_data_module_with_a_category_argument_gets_the_category_itself() -> None:
    spec = DataSpec(
        "MVTecAD", "anomalib.data.MVTecAD", {"root": "datasets/MVTecAD", "num_workers": 0}, ("cable",), MVTecAD
    )
    assert spec.takes_category
    datamodule = spec.build("cable")
    assert isinstance(datamodule, MVTecAD) and datamodule.category == "cable"
    assert Path(datamodule.root) == Path("datasets/MVTecAD")
