"""``anomalib-adaclip predict``'s argument rewriting: predictions not returned unless asked, ``--resume`` turned
into a resuming writer (and the rewriting idempotent: Lightning starts DDP processes with the rewritten arguments)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from anomalib_adaclip.cli.predict import RESUME_FLAG, WRITER_CLASS, predict_arguments, reserve_resumed_table
from anomalib_adaclip.components import PredictionCSVWriter


def test_the_writer_class_path_resolves_to_the_resumable_writer() -> None:
    """jsonargparse imports WRITER_CLASS by its path and passes ``resume``: both must exist."""
    module, name = WRITER_CLASS.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is PredictionCSVWriter
    assert "resume" in inspect.signature(PredictionCSVWriter).parameters
    assert RESUME_FLAG == "--resume"


def test_an_option_after_resume_is_not_taken_for_a_table() -> None:
    arguments = ["--resume", "-c", "run.yaml"]
    rewritten = predict_arguments(arguments)
    assert rewritten[:4] == ["--return_predictions", "false", "-c", "run.yaml"]
    assert rewritten[4].endswith('"init_args": {"resume": true}}')
    assert arguments == ["--resume", "-c", "run.yaml"]  # the caller's list is left alone


def test_without_resume_nothing_but_the_default_is_added() -> None:
    arguments = ["--data", "x", "--trainer.callbacks+=SomeCallback", "--model", "AdaCLIP"]
    assert predict_arguments(arguments) == ["--return_predictions", "false", *arguments]
    assert predict_arguments([]) == ["--return_predictions", "false"]


def test_predict_does_not_return_predictions_unless_asked() -> None:
    assert predict_arguments(["--data", "x"]) == ["--return_predictions", "false", "--data", "x"]
    assert predict_arguments(["--return_predictions", "true"]) == ["--return_predictions", "true"]
    assert predict_arguments(["--return_predictions=true"]) == ["--return_predictions=true"]


@pytest.mark.parametrize(
    ("arguments", "resume"),
    [
        (["--data", "x", "--resume"], True),
        (["--resume", "--data", "x"], True),
        (["--resume", "run/predictions-v1.csv", "--data", "x"], "run/predictions-v1.csv"),
        (["--data", "x", "--resume=t.csv"], "t.csv"),
    ],
)
def test_resume_becomes_a_resuming_writer(arguments: list[str], resume: str | bool) -> None:
    rewritten = predict_arguments(arguments)
    assert rewritten[:4] == ["--return_predictions", "false", "--data", "x"]
    expected = f'--trainer.callbacks+={{"class_path": "{WRITER_CLASS}", "init_args": {{"resume": '
    assert rewritten[4:] == [expected + ("true" if resume is True else f'"{resume}"') + "}}"]
    # Idempotent: Lightning starts the other DDP processes with the rewritten arguments.
    assert predict_arguments(rewritten) == rewritten
    with pytest.raises(SystemExit, match="given twice"):
        predict_arguments([*arguments, "--resume"])


class _ParsedError(Exception):
    """Raised by the hook below: the command is parsed, nothing is built."""


def parsed_predict(monkeypatch: pytest.MonkeyPatch, arguments: list[str]) -> object:
    """The parsed ``predict`` configuration, as the hook before the model's construction receives it."""
    from anomalib_adaclip.compat import anomalib_cli_main

    configs: list[object] = []

    def capture(config: object) -> None:
        configs.append(config)
        raise _ParsedError

    monkeypatch.setattr(sys, "argv", ["anomalib-adaclip", "predict", *predict_arguments(arguments)])
    with pytest.raises(_ParsedError):
        anomalib_cli_main(capture)
    return configs[0]


@pytest.mark.parametrize("data", ["folder", "images"])
def test_a_resume_locks_the_table_in_the_results_folder_the_engine_will_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: str
) -> None:
    from anomalib.data import Folder
    from anomalib.engine import Engine

    from anomalib_adaclip.components import prediction_table

    images = tmp_path / "images"
    if data == "folder":
        module = Folder(name="line3", root=images, normal_dir="good")
        options = ["--data", "Folder", "--data.name", "line3", "--data.root", str(images), "--data.normal_dir", "good"]
    else:
        module, options = None, ["--data", str(images)]
    root = tmp_path / "results"
    config = parsed_predict(monkeypatch, ["--model", "AdaCLIP", *options, "--default_root_dir", str(root), "--resume"])
    # The Engine's own rule, on what it receives (a data module, or none for a folder of images).
    engine = Engine(default_root_dir=root)
    engine._setup_workspace(model=SimpleNamespace(name="AdaCLIP"), datamodule=module)
    expected = Path(engine._cache.args["default_root_dir"]) / "predictions.csv.lock"
    lock = reserve_resumed_table(config)
    try:
        assert lock is not None and lock.held and lock.path == expected
        assert prediction_table.table_lock(expected.with_suffix("")) is lock  # what the writer will take
    finally:
        lock.release()
    assert reserve_resumed_table(parsed_predict(monkeypatch, ["--model", "AdaCLIP", "--data", str(images)])) is None
