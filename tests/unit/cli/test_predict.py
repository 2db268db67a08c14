"""``anomalib-adaclip predict``'s argument rewriting.

The first tests of ``predict_arguments`` (``--return_predictions``, the ``--resume`` spellings) are still in
``tests/unit/components/test_prediction_table.py``, next to the resumable table they feed; these add the rest.
"""

from __future__ import annotations

import importlib
import inspect

from anomalib_adaclip.cli.predict import RESUME_FLAG, WRITER_CLASS, predict_arguments
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
