"""The generated parts of the reference: the ``AdaCLIP`` parameter table and the table of the paper's 14 data sets.

``docs/source/_ext/adaclip_docgen.py`` writes them while the site builds, and the reference pages include them, so
they cannot drift from the code. These tests check what the generator produces against the code it documents (the
constructor's signature and the registry), and that the pages include it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from tests.docs.pages import SITE, docgen


@pytest.fixture(scope="module")
def parameter_rows() -> dict[str, list[str]]:
    rows = {}
    for line in docgen().parameter_table().splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    return rows


def test_parameter_table_lists_every_argument_with_its_actual_default(parameter_rows: dict[str, list[str]]) -> None:
    """Every argument, each followed by every field of its group, with the actual default and a description."""
    from anomalib_adaclip import AdaCLIP
    from tests.helpers import SETTINGS_GROUPS

    assert docgen().argument_groups() == SETTINGS_GROUPS
    expected = {}
    for name, parameter in inspect.signature(AdaCLIP.__init__).parameters.items():
        if name != "self":
            expected[name] = parameter.default
            for field in dataclasses.fields(SETTINGS_GROUPS[name]) if name in SETTINGS_GROUPS else ():
                default = docgen().field_default(field)
                expected[f"{name}.{field.name}"] = default
                for inner in dataclasses.fields(default) if dataclasses.is_dataclass(default) else ():
                    expected[f"{name}.{field.name}.{inner.name}"] = inner.default  # rarity.scoring.topk
    assert list(parameter_rows) == list(expected), "the parameter table's settings differ from AdaCLIP's"
    for name, default in expected.items():
        assert parameter_rows[name][2] == docgen().render_default(default), name
        assert parameter_rows[name][3], f"no description of {name}: document it in AdaCLIP's or its group's docstring"


def test_parameter_table_renders_defaults_as_yaml_writes_them() -> None:
    render = docgen().render_default
    assert [render(None), render(True), render("SD"), render(4.0), render([1, 2])] == [
        "`null`",
        "`true`",
        '`"SD"`',
        "`4.0`",
        "`[1, 2]`",
    ]


def test_every_argument_is_documented_once() -> None:
    """``AdaCLIP``'s ``Args:`` document its arguments; each group's ``Attributes:`` its fields, and nothing else."""
    from anomalib_adaclip import AdaCLIP

    arguments = docgen().docstring_arguments
    parameters = set(inspect.signature(AdaCLIP.__init__).parameters) - {"self"}
    assert set(arguments(AdaCLIP)) == parameters
    for name, config in docgen().argument_groups().items():
        attributes = set(arguments(config, "Attributes:"))
        assert attributes == {field.name for field in dataclasses.fields(config)}, f"{config.__name__}'s Attributes:"
        assert name in parameters


def test_dataset_table_has_a_row_per_registered_data_set() -> None:
    from anomalib_adaclip.data.paper_datasets import PAPER_DATASETS

    rows = docgen().dataset_table().splitlines()[2:]
    assert len(rows) == len(PAPER_DATASETS) == 14
    for row, (key, entry) in zip(rows, PAPER_DATASETS.items(), strict=True):
        assert row.startswith(f"| {entry.name} | `{entry.datamodule}` (`{entry.default_root}`) |"), row
        assert (f"prepare-data {key} " in row) == entry.preparable, row


@pytest.mark.parametrize(
    ("page", "part"),
    [
        ("reference/parameters.md", "parameters.md"),
        ("reference/datasets.md", "datasets.md"),
        ("reference/cli.md", "cli.md"),
    ],
)
def test_reference_pages_include_their_generated_part(page: str, part: str) -> None:
    assert f"```{{include}} _generated/{part}\n```" in (SITE / page).read_text()
