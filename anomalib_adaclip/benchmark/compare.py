"""Accuracy benchmark: AdaCLIP against other anomalib models on a grid of data sets, categories and seeds.

anomalib's own ``anomalib benchmark`` cannot run zero-shot models (it calls ``Engine.fit`` with the data module as a
positional argument, so WinCLIP and AdaCLIP end in "val_dataloader must be implemented") and refuses class paths from
outside anomalib. This benchmark runs any :class:`~anomalib.models.components.AnomalibModule` (AdaCLIP with any
checkpoint or backbone, anomalib's WinClip, PatchCore, ...) the way anomalib's Engine is meant to run it: a model that
learns from normal images (``LearningType.ONE_CLASS``) is fitted and then tested; a zero- or few-shot model is tested
directly (``Engine.test(model, datamodule=...)``, which validates first to collect its thresholds). Every run gets an
equal, freshly built :class:`~anomalib.metrics.Evaluator` with the same six metrics (:func:`benchmark_evaluator`), so
the numbers of all models are computed by the same code.

The grid, the output folder and the Engine settings come from a YAML file (``configs/benchmark/*.yaml``)::

    anomalib-adaclip benchmark --config configs/benchmark/paper.yaml

Outputs, under the configured ``output`` folder (nothing that exists is overwritten):

- ``runs/<model>/<dataset>/<category>/seed<k>.json``: one record per finished run (its metrics, timings, the model and
  data configuration, versions). A rerun on the same folder skips every run that has one (resume). A failed run is
  recorded as ``seed<k>.failed.json`` (``-v1``, ``-v2``, ... for later attempts) and tried again on the next rerun.
- ``reports/v<N>/`` (``reports/latest`` links to the newest): ``results.csv`` (per category and model, mean and
  standard deviation over the seeds, plus the mean over the categories of each data set), ``runs.csv`` (every run,
  failed ones with their error), ``results.md`` (the tables in percent, and the failed runs), ``plot_<dataset>.png``
  (bars per category and model, one panel per metric) and the ``config.yaml`` it was made from.
- ``artifacts/<model>/<dataset>/<category>/seed<k>/v<N>/``: anomalib's run folder of each attempt (visualisations when
  ``visualize: true``; no model checkpoints are written).

Example:
    >>> from anomalib_adaclip.benchmark.compare import run_benchmark
    >>> result = run_benchmark("configs/benchmark/paper.yaml")  # doctest: +SKIP
    >>> result.report_dir  # doctest: +SKIP
    PosixPath('results/benchmark/paper/reports/v0')
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import logging
import math
import re
import statistics
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator
    from anomalib.models.components import AnomalibModule

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARK_METRICS",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "BenchmarkResult",
    "DataSpec",
    "ModelSpec",
    "ResultRow",
    "RunKey",
    "RunRecord",
    "benchmark_evaluator",
    "load_config",
    "main",
    "run_benchmark",
    "summarise",
]

# anomalib's metric names (prefix + class name); "AUPR" is average precision: sum over recall steps of precision.
BENCHMARK_METRICS: tuple[str, ...] = (
    "image_AUROC",
    "image_AUPR",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_F1Max",
)
METRIC_LABELS = {
    "image_AUROC": "image AUROC",
    "image_AUPR": "image AP",
    "image_F1Max": "image F1-max",
    "pixel_AUROC": "pixel AUROC",
    "pixel_AUPRO": "pixel AUPRO",
    "pixel_F1Max": "pixel F1-max",
}
MEAN_CATEGORY = "mean"
CATEGORY_PLACEHOLDER = "{category}"
NO_CATEGORY_FOLDER = "_"
CONFIG_KEYS = ("models", "data", "seeds", "output", "engine", "visualize", "score_normalization")
MODEL_KEYS = ("name", "class_path", "init_args", "init_args_by_dataset")
DATA_KEYS = ("name", "class_path", "init_args", "categories")
DEFAULT_ENGINE_ARGUMENTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
MANAGED_ENGINE_ARGUMENTS = ("default_root_dir", "callbacks")
# Data arguments that do not change the numbers: they may differ between a run and its resumption.
RUNTIME_DATA_ARGUMENTS = frozenset({"num_workers", "eval_batch_size"})
# Where the evaluator sits in a model when the Engine runs it before the model's post-processor.
EVALUATOR_ATTRIBUTE = "benchmark_evaluator"
SHORT_NAME_MODULES = {"model": ("anomalib_adaclip", "anomalib.models"), "data": ("anomalib.data",)}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ERROR_CHARACTERS = 300


class BenchmarkConfigError(ValueError):
    """A benchmark configuration that cannot run; the message names the file, the entry and what was expected."""


def benchmark_evaluator() -> Evaluator:
    """The metrics of every benchmark run: image AUROC, AP (AUPR), F1-max; pixel AUROC, AUPRO, F1-max.

    Pixel metrics are skipped for data without masks (``strict=False``). AUPRO integrates up to a false positive rate
    of 0.3 (anomalib's default, the usual protocol). A fresh instance is built for each run: the metrics hold state.
    """
    from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max  # noqa: PLC0415

    image, pixel = ["pred_score", "gt_label"], ["anomaly_map", "gt_mask"]
    return Evaluator(
        test_metrics=[
            AUROC(fields=image, prefix="image_"),
            AUPR(fields=image, prefix="image_"),
            F1Max(fields=image, prefix="image_"),
            AUROC(fields=pixel, prefix="pixel_", strict=False),
            AUPRO(fields=pixel, prefix="pixel_", strict=False),
            F1Max(fields=pixel, prefix="pixel_", strict=False),
        ],
    )


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid.

    Args:
        name: Name in the results (and in the run folders).
        class_path: Dotted path of an ``AnomalibModule`` subclass (``anomalib_adaclip.AdaCLIP``,
            ``anomalib.models.WinClip``, ...), or a short name found in ``anomalib_adaclip`` or ``anomalib.models``.
        init_args: Constructor arguments (as in anomalib's YAML configs; nested ``class_path`` blocks work).
        init_args_by_dataset: Per data set name, arguments that replace ``init_args`` on that data set (e.g. AdaCLIP's
            ``checkpoint``: ``visa_clinicdb`` on MVTec AD, ``mvtec_colondb`` elsewhere).
        model_class: The resolved class.
    """

    name: str
    class_path: str
    init_args: dict[str, Any]
    init_args_by_dataset: dict[str, dict[str, Any]]
    model_class: type = field(compare=False, repr=False)

    def arguments_for(self, dataset: str) -> dict[str, Any]:
        """The constructor arguments on data set ``dataset``."""
        return {**self.init_args, **self.init_args_by_dataset.get(dataset, {})}

    def configuration_for(self, dataset: str) -> dict[str, Any]:
        """What a run record keeps of the model: class path and the arguments as configured."""
        return {"class_path": self.class_path, "init_args": _plain(self.arguments_for(dataset))}

    def build(self, dataset: str, evaluator: Evaluator | bool, visualize: bool) -> AnomalibModule:
        """Instantiate the model for data set ``dataset`` with the benchmark's evaluator.

        Args:
            dataset: Data set name (selects ``init_args_by_dataset``).
            evaluator: The evaluator every model gets, or ``False`` when the Engine runs it as a callback of its own.
            visualize: Keep the model's visualizer; otherwise it is turned off unless ``init_args`` set one.
        """
        arguments = self.arguments_for(dataset)
        keywords = _instantiate_arguments(self.model_class, arguments, skip=frozenset({"evaluator"}))
        parameters = inspect.signature(self.model_class).parameters
        if not visualize and "visualizer" in parameters and "visualizer" not in arguments:
            keywords["visualizer"] = False
        if "evaluator" in parameters:
            return self.model_class(**keywords, evaluator=evaluator)
        model = self.model_class(**keywords)
        model.evaluator = evaluator or None
        return model


@dataclass(frozen=True)
class DataSpec:
    """One data set of the grid.

    Args:
        name: Name in the results (and in the run folders).
        class_path: Dotted path of an anomalib data module (``anomalib.data.MVTecAD``, ...), or a short name found in
            ``anomalib.data``.
        init_args: Constructor arguments without the category. Strings may contain ``{category}``, which is replaced
            by each category (for data modules without a ``category`` argument, such as ``Folder``).
        categories: Categories to run; empty for one run without a category.
        data_class: The resolved class.
    """

    name: str
    class_path: str
    init_args: dict[str, Any]
    categories: tuple[str, ...]
    data_class: type = field(compare=False, repr=False)

    @property
    def takes_category(self) -> bool:
        """Whether the data module has a ``category`` argument (``MVTecAD``, ``Visa``, ... but not ``Folder``)."""
        return "category" in inspect.signature(self.data_class).parameters

    def arguments_for(self, category: str) -> dict[str, Any]:
        """The constructor arguments for ``category``, ``{category}`` substituted (the category itself not included)."""
        return _substitute(self.init_args, category)

    def configuration_for(self, category: str) -> dict[str, Any]:
        """What a run record keeps of the data: class path, category and the arguments that change the numbers."""
        arguments = {
            key: value for key, value in self.arguments_for(category).items() if key not in RUNTIME_DATA_ARGUMENTS
        }
        return {"class_path": self.class_path, "category": category, "init_args": _plain(arguments)}

    def build(self, category: str) -> Any:
        """Instantiate the data module for ``category``."""
        keywords = _instantiate_arguments(self.data_class, self.arguments_for(category), skip=frozenset({"category"}))
        if self.takes_category:
            return self.data_class(**keywords, category=category)
        datamodule = self.data_class(**keywords)
        if category:
            datamodule.category = category  # e.g. Folder: its category is the prompts' class name and a results folder
        return datamodule


@dataclass(frozen=True, order=True)
class RunKey:
    """One cell of the grid: a model on a category of a data set with a seed."""

    model: str
    dataset: str
    category: str
    seed: int

    @property
    def label(self) -> str:
        """``model · dataset/category · seed k``."""
        where = f"{self.dataset}/{self.category}" if self.category else self.dataset
        return f"{self.model} · {where} · seed {self.seed}"

    @property
    def folder(self) -> Path:
        """``<model>/<dataset>/<category>`` (``_`` without a category)."""
        return Path(self.model) / self.dataset / (self.category or NO_CATEGORY_FOLDER)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The grid: models x data sets x categories x seeds, the output folder and the Engine settings.

    Args:
        models: The models.
        data: The data sets.
        seeds: Seeds; each run calls ``lightning.seed_everything(seed)`` before building the model. Defaults to
            ``(0,)``.
        output: Output folder. Defaults to ``results/benchmark/<config file name>``.
        engine: Arguments of anomalib's ``Engine`` (Lightning ``Trainer`` arguments) over
            :data:`DEFAULT_ENGINE_ARGUMENTS`.
        visualize: Keep the models' visualizers (an image per test image and run). Defaults to ``False``.
        score_normalization: Compute the metrics on the scores and maps as each model's post-processor leaves them
            (anomalib's min-max normalisation, clamped to [0, 1]), as ``anomalib test`` reports them. ``False``
            computes them on the raw model outputs, as papers do: the clamping ties the lowest (or highest) scores,
            which changes AUROC, AP and AUPRO. Defaults to ``False``.
        source: Where the configuration came from (file path), for messages and reports.
        raw: The configuration as read, written to each report.
    """

    models: tuple[ModelSpec, ...]
    data: tuple[DataSpec, ...]
    seeds: tuple[int, ...] = (0,)
    output: Path = Path("results/benchmark")
    engine: dict[str, Any] = field(default_factory=dict)
    visualize: bool = False
    score_normalization: bool = False
    source: str = "<mapping>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def grid(self) -> list[RunKey]:
        """Every run, data set by data set, category by category, model by model, seed by seed."""
        return [
            RunKey(model.name, data.name, category, seed)
            for data in self.data
            for category in data.categories or ("",)
            for model in self.models
            for seed in self.seeds
        ]

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``."""
        return next(model for model in self.models if model.name == name)

    def dataset(self, name: str) -> DataSpec:
        """The data set called ``name``."""
        return next(data for data in self.data if data.name == name)


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, paths as strings): comparable with a stored record."""
    return json.loads(json.dumps(value, default=str))


def _substitute(value: Any, category: str) -> Any:
    if isinstance(value, str):
        return value.replace(CATEGORY_PLACEHOLDER, category)
    if isinstance(value, Mapping):
        return {key: _substitute(item, category) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(item, category) for item in value]
    return value


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return CATEGORY_PLACEHOLDER in value
    if isinstance(value, Mapping):
        return any(_has_placeholder(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_placeholder(item) for item in value)
    return False


@cache
def _argument_parser(target: type, skip: frozenset[str]) -> Any:
    """A jsonargparse parser of ``target``'s constructor (types checked as anomalib's CLI checks them)."""
    from jsonargparse import ArgumentParser  # noqa: PLC0415

    parser = ArgumentParser(exit_on_error=False)
    parameters = inspect.signature(target).parameters
    parser.add_class_arguments(
        target, "init", skip={name for name in skip if name in parameters}, instantiate=False, fail_untyped=False
    )
    return parser


def _parse_arguments(target: type, arguments: Mapping[str, Any], skip: frozenset[str]) -> Any:
    return _argument_parser(target, skip).parse_object({"init": dict(arguments)})


def _instantiate_arguments(target: type, arguments: Mapping[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    """Typed constructor keywords of ``target``: values checked and nested ``class_path`` blocks instantiated."""
    parser = _argument_parser(target, skip)
    namespace = parser.instantiate_classes(_parse_arguments(target, arguments, skip))
    return namespace.init.as_dict()


def _resolve_class(class_path: Any, kind: Literal["model", "data"], where: str) -> type:
    from anomalib.data import AnomalibDataModule  # noqa: PLC0415
    from anomalib.models.components import AnomalibModule  # noqa: PLC0415

    base = AnomalibModule if kind == "model" else AnomalibDataModule
    if not isinstance(class_path, str) or not class_path.strip():
        msg = f"{where}: class_path must be a dotted class path such as 'anomalib.models.WinClip', got {class_path!r}."
        raise BenchmarkConfigError(msg)
    candidates = (
        [class_path] if "." in class_path else [f"{module}.{class_path}" for module in SHORT_NAME_MODULES[kind]]
    )
    problems = []
    for candidate in candidates:
        module_name, _, attribute = candidate.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            problems.append(f"{candidate}: {type(error).__name__}: {error}")
            continue
        resolved = getattr(module, attribute, None)
        if resolved is None:
            problems.append(f"{candidate}: module {module_name} has no {attribute!r}")
            continue
        if not (inspect.isclass(resolved) and issubclass(resolved, base)):
            msg = f"{where}: {candidate} is not a subclass of {base.__module__}.{base.__name__}."
            raise BenchmarkConfigError(msg)
        return resolved
    msg = f"{where}: class_path {class_path!r} cannot be imported ({'; '.join(problems)})."
    raise BenchmarkConfigError(msg)


def _check_arguments(target: type, arguments: Mapping[str, Any], skip: frozenset[str], where: str) -> None:
    try:
        _parse_arguments(target, arguments, skip)
    except Exception as error:  # jsonargparse raises ArgumentError (or ValueError/TypeError from type checks)
        detail = " ".join(str(error).split())
        msg = f"{where}: init_args do not fit {target.__module__}.{target.__qualname__}: {detail}"
        raise BenchmarkConfigError(msg) from error


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"{where} must be a mapping, got {type(value).__name__}: {value!r}."
        raise BenchmarkConfigError(msg)
    return dict(value)


def _entries(raw: Mapping[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    entries = raw.get(key)
    if not isinstance(entries, list) or not entries:
        msg = f"{source}: '{key}' must be a non-empty list of entries with class_path (and init_args)."
        raise BenchmarkConfigError(msg)
    return [_mapping(entry, f"{source}: {key}[{index}]") for index, entry in enumerate(entries)]


def _check_keys(entry: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [key for key in entry if key not in allowed]
    if unknown:
        msg = f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}."
        raise BenchmarkConfigError(msg)


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        msg = (
            f"{where}: name {name!r} must be a non-empty folder name of letters, digits and '_', '.', '+', '-' (it "
            "names the run folders)."
        )
        raise BenchmarkConfigError(msg)
    return name


def _check_unique(names: Iterable[str], what: str, source: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            msg = f"{source}: two {what} are called {name!r}; give each its own 'name'."
            raise BenchmarkConfigError(msg)
        seen.add(name)


def _data_spec(entry: Mapping[str, Any], where: str) -> DataSpec:
    _check_keys(entry, DATA_KEYS, where)
    data_class = _resolve_class(entry.get("class_path"), "data", where)
    init_args = _mapping(entry.get("init_args"), f"{where}: init_args")
    default_name = init_args.get("name") if isinstance(init_args.get("name"), str) else data_class.__name__
    name = _check_name(entry.get("name", default_name), where)
    where = f"{where} ({name})"
    categories = entry.get("categories")
    if categories is None:
        categories = []
    if not isinstance(categories, list) or not all(isinstance(item, str) and item for item in categories):
        msg = f"{where}: categories must be a list of category names, got {categories!r}."
        raise BenchmarkConfigError(msg)
    _check_unique(categories, "categories", where)
    for category in categories:
        _check_name(category, f"{where}: category")
    spec = DataSpec(name, entry["class_path"], init_args, tuple(categories), data_class)
    if "category" in init_args:
        msg = f"{where}: list the categories under 'categories', not as init_args.category."
        raise BenchmarkConfigError(msg)
    if spec.takes_category and not categories:
        msg = f"{where}: {data_class.__name__} needs categories: list them, e.g. categories: [bottle, cable]."
        raise BenchmarkConfigError(msg)
    if not categories and _has_placeholder(init_args):
        msg = f"{where}: init_args use {CATEGORY_PLACEHOLDER} but no categories are listed."
        raise BenchmarkConfigError(msg)
    if categories and not spec.takes_category and not _has_placeholder(init_args):
        msg = (
            f"{where}: {data_class.__name__} has no category argument, so every category would read the same data: "
            f"put {CATEGORY_PLACEHOLDER} into a path of init_args (e.g. root: datasets/parts/{CATEGORY_PLACEHOLDER})."
        )
        raise BenchmarkConfigError(msg)
    _check_arguments(
        data_class, spec.arguments_for(categories[0] if categories else ""), frozenset({"category"}), where
    )
    return spec


def _model_spec(entry: Mapping[str, Any], where: str, dataset_names: Sequence[str]) -> ModelSpec:
    _check_keys(entry, MODEL_KEYS, where)
    model_class = _resolve_class(entry.get("class_path"), "model", where)
    name = _check_name(entry.get("name", model_class.__name__), where)
    where = f"{where} ({name})"
    init_args = _mapping(entry.get("init_args"), f"{where}: init_args")
    by_dataset = _mapping(entry.get("init_args_by_dataset"), f"{where}: init_args_by_dataset")
    unknown = [dataset for dataset in by_dataset if dataset not in dataset_names]
    if unknown:
        msg = (
            f"{where}: init_args_by_dataset names unknown data sets {unknown}; the data sets are {list(dataset_names)}."
        )
        raise BenchmarkConfigError(msg)
    by_dataset = {
        dataset: _mapping(arguments, f"{where}: init_args_by_dataset.{dataset}")
        for dataset, arguments in by_dataset.items()
    }
    spec = ModelSpec(name, entry["class_path"], init_args, by_dataset, model_class)
    for dataset in dataset_names:
        arguments = spec.arguments_for(dataset)
        if "evaluator" in arguments:
            msg = f"{where}: leave out 'evaluator': the benchmark gives every model the same metrics."
            raise BenchmarkConfigError(msg)
        _check_arguments(model_class, arguments, frozenset({"evaluator"}), f"{where} on {dataset}")
    return spec


def _engine_arguments(value: Any, source: str) -> dict[str, Any]:
    from lightning.pytorch import Trainer  # noqa: PLC0415

    arguments = _mapping(value, f"{source}: engine")
    managed = [key for key in MANAGED_ENGINE_ARGUMENTS if key in arguments]
    if managed:
        msg = f"{source}: engine.{managed[0]} is set by the benchmark (run folders, no checkpoints); leave it out."
        raise BenchmarkConfigError(msg)
    known = set(inspect.signature(Trainer.__init__).parameters) | {"logger"}
    unknown = [key for key in arguments if key not in known]
    if unknown:
        msg = f"{source}: unknown engine argument(s) {unknown}: use Lightning Trainer arguments (accelerator, ...)."
        raise BenchmarkConfigError(msg)
    return arguments


def load_config(source: str | Path | Mapping[str, Any], output: str | Path | None = None) -> BenchmarkConfig:
    """Read and check a benchmark configuration; nothing is built or downloaded.

    Class paths are imported and every ``init_args`` is type-checked against its constructor (as anomalib's CLI does),
    so a typo fails here, in seconds, rather than hours into the grid.

    Args:
        source: A YAML file, or the same content as a mapping.
        output: Output folder; overrides the file's ``output``.

    Returns:
        The checked configuration.

    Raises:
        BenchmarkConfigError: The file is missing, or an entry is invalid (the message names it and what was expected).
    """
    if isinstance(source, Mapping):
        raw, origin, default_output = dict(source), "<benchmark config>", Path("results/benchmark")
    else:
        path = Path(source)
        if not path.is_file():
            msg = f"Benchmark configuration {path} does not exist (see configs/benchmark/ for examples)."
            raise BenchmarkConfigError(msg)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            msg = f"{path}: not valid YAML: {error}"
            raise BenchmarkConfigError(msg) from error
        raw = _mapping(raw, str(path))
        origin, default_output = str(path), Path("results/benchmark") / path.stem
    _check_keys(raw, CONFIG_KEYS, origin)
    data = tuple(
        _data_spec(entry, f"{origin}: data[{index}]") for index, entry in enumerate(_entries(raw, "data", origin))
    )
    _check_unique((spec.name for spec in data), "data sets", origin)
    names = [spec.name for spec in data]
    models = tuple(
        _model_spec(entry, f"{origin}: models[{index}]", names)
        for index, entry in enumerate(_entries(raw, "models", origin))
    )
    _check_unique((spec.name for spec in models), "models", origin)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(seed) is int for seed in seeds):
        msg = f"{origin}: seeds must be a non-empty list of integers, got {seeds!r}."
        raise BenchmarkConfigError(msg)
    _check_unique((str(seed) for seed in seeds), "seeds", origin)
    flags = {key: raw.get(key, False) for key in ("visualize", "score_normalization")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            msg = f"{origin}: {key} must be true or false, got {value!r}."
            raise BenchmarkConfigError(msg)
    output_dir = Path(output) if output is not None else Path(raw.get("output") or default_output)
    return BenchmarkConfig(
        models=models,
        data=data,
        seeds=tuple(seeds),
        output=output_dir.expanduser(),
        engine=_engine_arguments(raw.get("engine"), origin),
        visualize=flags["visualize"],
        score_normalization=flags["score_normalization"],
        source=origin,
        raw=raw,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Run records
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """What one run produced, stored as JSON under ``runs/``.

    Attributes:
        model: Model name.
        dataset: Data set name.
        category: Category (``""`` for a data set without categories).
        seed: Seed.
        status: ``"finished"`` or ``"failed"``.
        metrics: anomalib's test metrics (``image_AUROC``, ...; pixel metrics are absent for data without masks).
        error: ``"<ExceptionType>: message"`` of a failed run.
        traceback: The traceback of a failed run.
        learning_type: ``"zero_shot"``, ``"few_shot"`` or ``"one_class"`` (``None`` when the model could not be built).
        fit_seconds: Time of ``Engine.fit`` (one-class models only).
        test_seconds: Time of ``Engine.test`` (its validation pass included).
        model_config: Class path and arguments of the model, as configured.
        data_config: Class path, category and arguments of the data module (without ``num_workers``/batch size).
        score_normalization: Whether the metrics were computed on post-processed (normalised) scores.
        artifacts: anomalib's run folder of this attempt.
        finished_at: UTC time stamp.
        versions: Versions of anomalib, torch, open_clip and this package.
        path: The record's file (not stored in it).
    """

    model: str
    dataset: str
    category: str
    seed: int
    status: Literal["finished", "failed"]
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    learning_type: str | None = None
    fit_seconds: float | None = None
    test_seconds: float | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    score_normalization: bool = False
    artifacts: str | None = None
    finished_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def key(self) -> RunKey:
        """The grid cell of this run."""
        return RunKey(self.model, self.dataset, self.category, self.seed)

    def to_json(self) -> str:
        """The record as JSON (without ``path``)."""
        content = asdict(self)
        content.pop("path")
        return json.dumps(content, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Read a record; a file that is not one is an error naming the file."""
        try:
            content = json.loads(path.read_text())
            return cls(**content, path=path)
        except (OSError, ValueError, TypeError) as error:
            msg = f"{path} is not a benchmark run record ({type(error).__name__}: {error}); move it out of the folder."
            raise BenchmarkConfigError(msg) from error


def _free_path(path: Path) -> Path:
    """``path`` if it does not exist, else ``<stem>-v1<suffix>``, ``-v2``, ... (nothing is overwritten)."""
    from anomalib_adaclip.files import free_path  # noqa: PLC0415

    return free_path(path)


class RunStore:
    """The run records of an output folder: ``runs/<model>/<dataset>/<category>/seed<k>[.failed[-vN]].json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def finished_path(self, key: RunKey) -> Path:
        """Where the record of a finished run is (or goes)."""
        return self.root / key.folder / f"seed{key.seed}.json"

    def failures(self, key: RunKey) -> list[Path]:
        """Records of the failed attempts of a run, oldest first."""
        folder = self.root / key.folder

        def attempt(path: Path) -> int:
            version = path.stem.rpartition("-v")[2]
            return int(version) if version.isdigit() else 0

        return sorted(folder.glob(f"seed{key.seed}.failed*.json"), key=attempt)

    def finished(self, key: RunKey) -> RunRecord | None:
        """The record of the finished run, if any."""
        path = self.finished_path(key)
        return RunRecord.read(path) if path.is_file() else None

    def latest(self, key: RunKey) -> RunRecord | None:
        """The finished record, else the last failed attempt, else ``None``."""
        finished = self.finished(key)
        if finished is not None:
            return finished
        failures = self.failures(key)
        return RunRecord.read(failures[-1]) if failures else None

    def save(self, record: RunRecord) -> Path:
        """Write a record; a finished record never replaces another one, failed attempts get a new file each."""
        key = record.key
        if record.status == "finished":
            path = self.finished_path(key)
            if path.exists():
                msg = f"{path} exists: a finished run is never written twice."
                raise FileExistsError(msg)
        else:
            path = _free_path(self.root / key.folder / f"seed{key.seed}.failed.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.to_json())
        record.path = path
        return path


def _configuration_mismatches(config: BenchmarkConfig, store: RunStore) -> list[str]:
    """Finished runs in the folder whose model or data configuration differs from the current one."""
    problems = []
    for key in config.grid():
        record = store.finished(key)
        if record is None:
            continue
        expected = {
            "model": config.model(key.model).configuration_for(key.dataset),
            "data": config.dataset(key.dataset).configuration_for(key.category),
            "score_normalization": config.score_normalization,
        }
        stored = {
            "model": record.model_config,
            "data": record.data_config,
            "score_normalization": record.score_normalization,
        }
        for part, value in expected.items():
            if stored[part] != value:
                problems.append(f"{key.label}: {part} was {stored[part]}, is now {value} ({record.path})")
    return problems


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    versions = {}
    for package in ("anomalib", "torch", "open_clip", "lightning", "anomalib_adaclip"):
        try:
            versions[package] = str(importlib.import_module(package).__version__)
        except (ImportError, AttributeError):
            continue
    return versions


def _release_memory() -> None:
    import torch  # noqa: PLC0415

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _execute(key: RunKey, config: BenchmarkConfig) -> RunRecord:
    """Run one cell of the grid; any exception is recorded, not raised (``KeyboardInterrupt`` still stops)."""
    from anomalib import LearningType  # noqa: PLC0415
    from anomalib.callbacks import ModelCheckpoint  # noqa: PLC0415
    from anomalib.engine import Engine  # noqa: PLC0415
    from anomalib.utils.path import create_versioned_dir  # noqa: PLC0415
    from lightning.pytorch import seed_everything  # noqa: PLC0415

    model_spec, data_spec = config.model(key.model), config.dataset(key.dataset)
    artifacts = create_versioned_dir(config.output / "artifacts" / key.folder / f"seed{key.seed}").resolve()
    record = RunRecord(
        model=key.model,
        dataset=key.dataset,
        category=key.category,
        seed=key.seed,
        status="failed",
        model_config=model_spec.configuration_for(key.dataset),
        data_config=data_spec.configuration_for(key.category),
        score_normalization=config.score_normalization,
        artifacts=str(artifacts),
        versions=_versions(),
    )
    model = datamodule = engine = None
    try:
        seed_everything(key.seed, workers=True)
        evaluator = benchmark_evaluator()
        # A model's own callbacks run after the Trainer's: the evaluator sees the post-processed (normalised) scores
        # when the model holds it, the raw outputs when the Engine does.
        model = model_spec.build(key.dataset, evaluator if config.score_normalization else False, config.visualize)
        datamodule = data_spec.build(key.category)
        record.learning_type = LearningType(model.learning_type).value
        # A checkpoint callback that saves nothing keeps anomalib from writing a model file per run (WinCLIP's holds
        # its whole CLIP).
        callbacks = [ModelCheckpoint(save_top_k=0, save_last=False)]
        if not config.score_normalization:
            callbacks.append(evaluator)
            # Lightning logs a metric object only when it is a submodule of the LightningModule.
            model.add_module(EVALUATOR_ATTRIBUTE, evaluator)
        engine = Engine(
            default_root_dir=artifacts,
            callbacks=callbacks,
            **{**DEFAULT_ENGINE_ARGUMENTS, **config.engine},
        )
        if model.learning_type == LearningType.ONE_CLASS:
            start = time.perf_counter()
            engine.fit(model, datamodule=datamodule)
            record.fit_seconds = round(time.perf_counter() - start, 3)
        # Zero- and few-shot models are not fitted: Engine.test validates first (thresholds), then tests.
        start = time.perf_counter()
        results = engine.test(model, datamodule=datamodule, verbose=False)
        record.test_seconds = round(time.perf_counter() - start, 3)
        metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
        if not any(name in metrics for name in BENCHMARK_METRICS):
            msg = f"the test returned none of the benchmark metrics (got {sorted(metrics)})"
            raise RuntimeError(msg)
        record.metrics = metrics
        record.status = "finished"
    except Exception as error:  # every failure is recorded and the grid goes on
        record.error = f"{type(error).__name__}: {error}"
        record.traceback = traceback.format_exc()
        logger.error("Benchmark run %s failed: %s (the traceback goes into its run record)", key.label, record.error)
    finally:
        del model, datamodule, engine
        _release_memory()
    record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


@dataclass
class ResultRow:
    """A row of ``results.csv``: a model on a category (mean over its seeds), or the mean over a data set's categories.

    Attributes:
        dataset: Data set name.
        category: Category, or ``"mean"`` for the mean over the categories.
        model: Model name.
        runs_finished: Finished runs behind the row.
        runs_failed: Runs without a result (their latest attempt failed).
        categories: Categories behind a mean row (1 for a category row with a result, 0 without).
        metrics: Mean of each metric (``None`` where no run has it).
        std: Standard deviation over the seeds of a category row (``None`` with fewer than two seeds and in mean rows).
    """

    dataset: str
    category: str
    model: str
    runs_finished: int
    runs_failed: int
    categories: int
    metrics: dict[str, float | None]
    std: dict[str, float | None]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(records: Sequence[RunRecord], config: BenchmarkConfig) -> list[ResultRow]:
    """Per category and model, the mean (and standard deviation) over the seeds; per data set and model, the mean.

    Runs without a record (not yet run) count neither as finished nor as failed. The mean over a data set's categories
    covers the categories with a result; ``categories`` says how many.
    """
    by_cell: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        by_cell.setdefault((record.dataset, record.category, record.model), []).append(record)
    rows = []
    for data in config.data:
        category_rows: dict[str, list[ResultRow]] = {model.name: [] for model in config.models}
        for category in data.categories or ("",):
            for model in config.models:
                cell = by_cell.get((data.name, category, model.name), [])
                finished = [record for record in cell if record.status == "finished"]
                metrics, std = {}, {}
                for name in BENCHMARK_METRICS:
                    values = [record.metrics[name] for record in finished if name in record.metrics]
                    metrics[name] = _mean(values)
                    std[name] = statistics.stdev(values) if len(values) > 1 else None
                row = ResultRow(
                    data.name, category, model.name, len(finished), len(cell) - len(finished), int(bool(finished)),
                    metrics, std,
                )  # fmt: skip
                rows.append(row)
                category_rows[model.name].append(row)
        for model in config.models:
            cells = category_rows[model.name]
            with_result = [row for row in cells if row.runs_finished]
            metrics = {
                name: _mean([row.metrics[name] for row in with_result if row.metrics[name] is not None])
                for name in BENCHMARK_METRICS
            }
            rows.append(
                ResultRow(
                    data.name,
                    MEAN_CATEGORY,
                    model.name,
                    sum(row.runs_finished for row in cells),
                    sum(row.runs_failed for row in cells),
                    len(with_result),
                    metrics,
                    dict.fromkeys(BENCHMARK_METRICS),
                )
            )
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------------
def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def _write_results_csv(path: Path, rows: Sequence[ResultRow]) -> None:
    import csv  # noqa: PLC0415

    header = ["dataset", "category", "model", "runs_finished", "runs_failed", "categories", *BENCHMARK_METRICS]
    header += [f"{name}_std" for name in BENCHMARK_METRICS]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            values = [_number(row.metrics[name]) for name in BENCHMARK_METRICS]
            values += [_number(row.std[name]) for name in BENCHMARK_METRICS]
            category = row.category
            writer.writerow(
                [row.dataset, category, row.model, row.runs_finished, row.runs_failed, row.categories, *values]
            )


def _write_runs_csv(path: Path, records: Sequence[RunRecord]) -> None:
    import csv  # noqa: PLC0415

    header = ["dataset", "category", "model", "seed", "status", *BENCHMARK_METRICS]
    header += ["learning_type", "fit_seconds", "test_seconds", "error", "record"]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for record in records:
            writer.writerow(
                [
                    record.dataset,
                    record.category,
                    record.model,
                    record.seed,
                    record.status,
                    *(_number(record.metrics.get(name)) for name in BENCHMARK_METRICS),
                    record.learning_type or "",
                    "" if record.fit_seconds is None else record.fit_seconds,
                    "" if record.test_seconds is None else record.test_seconds,
                    record.error or "",
                    str(record.path or ""),
                ]
            )


def _cell(row: ResultRow, name: str) -> str:
    value = row.metrics[name]
    if value is None:
        return "failed" if row.runs_finished == 0 and row.runs_failed else "–"
    text = f"{100 * value:.1f}"
    if row.std[name] is not None:
        text += f" ± {100 * row.std[name]:.1f}"
    return text


def _markdown_text(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= _ERROR_CHARACTERS else text[: _ERROR_CHARACTERS - 1] + "…"


def _write_markdown(
    path: Path, rows: Sequence[ResultRow], records: Sequence[RunRecord], config: BenchmarkConfig
) -> None:
    seeds = ", ".join(str(seed) for seed in config.seeds)
    lines = [
        f"# Benchmark: {config.source}",
        "",
        "Metrics in percent, computed for every model by the same anomalib Evaluator: "
        + ", ".join(METRIC_LABELS[name] for name in BENCHMARK_METRICS)
        + ". Image AP is anomalib's AUPR (average precision); pixel AUPRO integrates up to a false positive rate "
        "of 0.3. "
        + (
            "Computed on the scores and maps after each model's post-processing (anomalib's normalisation). "
            if config.score_normalization
            else "Computed on each model's raw scores and maps (before anomalib's normalisation). "
        )
        + f"Seeds: {seeds} (with several, `mean ± standard deviation` over the seeds). The `mean` rows average the "
        "categories of a data set.",
    ]
    header = "| Category | Model | " + " | ".join(METRIC_LABELS[name] for name in BENCHMARK_METRICS) + " |"
    rule = "| --- | --- | " + " | ".join("---:" for _ in BENCHMARK_METRICS) + " |"
    footnote = False
    for data in config.data:
        lines += ["", f"## {data.name}", "", header, rule]
        total = len(data.categories) or 1
        for row in (row for row in rows if row.dataset == data.name):
            values = [_cell(row, name) for name in BENCHMARK_METRICS]
            if row.category == MEAN_CATEGORY:
                label = "**mean**"
                if row.categories < total:
                    label = f"**mean** ({row.categories} of {total})†"
                    footnote = True
                cells = [
                    label,
                    f"**{row.model}**",
                    *(f"**{value}**" if value[:1].isdigit() else value for value in values),
                ]
            else:
                cells = [row.category or data.name, row.model, *values]
            lines.append("| " + " | ".join(cells) + " |")
    if footnote:
        lines += ["", "† The mean covers only the categories with a result: the others failed or have not run."]
    failed = [record for record in records if record.status == "failed"]
    if failed:
        lines += [
            "",
            "## Failed runs",
            "",
            "| Model | Data set | Category | Seed | Error |",
            "| --- | --- | --- | ---: | --- |",
        ]
        lines += [
            f"| {record.model} | {record.dataset} | {record.category or '–'} | {record.seed} | "
            f"{_markdown_text(record.error or '')} |"
            for record in failed
        ]
    path.write_text("\n".join(lines) + "\n")


def _plot(path: Path, rows: Sequence[ResultRow], data: DataSpec, models: Sequence[str]) -> Path:
    """Bars per category (and the mean) and model, one panel per metric with a value, saved as PNG."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: nothing changes the caller's backend)

    rows = [row for row in rows if row.dataset == data.name]
    groups = [*(data.categories or (data.name,)), MEAN_CATEGORY]
    metrics = [name for name in BENCHMARK_METRICS if any(row.metrics[name] is not None for row in rows)]
    metrics = metrics or ["image_AUROC"]
    value = {(row.category or data.name, row.model): row.metrics for row in rows}
    width = min(0.8 / max(len(models), 1), 0.35)
    figure = Figure(figsize=(max(6.0, 0.45 * len(groups) * max(len(models), 1) + 2), 2.4 * len(metrics)), dpi=100)
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    colours = [f"C{index % 10}" for index in range(len(models))]
    for axis, metric in zip(axes, metrics, strict=True):
        for index, (model, colour) in enumerate(zip(models, colours, strict=True)):
            offsets = [group + (index - (len(models) - 1) / 2) * width for group in range(len(groups))]
            heights = [value.get((group, model), {}).get(metric) for group in groups]
            axis.bar(
                [x for x, h in zip(offsets, heights, strict=True) if h is not None],
                [100 * h for h in heights if h is not None],
                width=width,
                color=colour,
                label=model,
            )
            for x, h in zip(offsets, heights, strict=True):
                if h is None:  # no result: failed or not run
                    axis.text(x, 2, "×", ha="center", va="bottom", color=colour, fontsize=9)
        axis.set_ylim(0, 100)
        axis.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(groups, rotation=45 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
        axis.grid(axis="y", alpha=0.3)
        axis.axvline(len(groups) - 1.5, color="grey", linestyle=":", linewidth=1)  # categories | mean
    handles, labels = axes[0].get_legend_handles_labels()
    figure.suptitle(f"{data.name}: per category and mean (× = no result)")
    figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(models), 4), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.4 * len(metrics))))
    figure.savefig(path)
    return path


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced.

    Attributes:
        report_dir: ``<output>/reports/v<N>``.
        rows: The rows of ``results.csv``.
        records: The latest record of every run of the grid (finished, else the last failure); runs not yet run have
            none.
        executed: Runs executed by this call.
        skipped: Runs skipped because they had finished before (resume).
        results_csv: ``results.csv``.
        runs_csv: ``runs.csv``.
        markdown: ``results.md``.
        plots: ``plot_<dataset>.png`` per data set.
    """

    report_dir: Path
    rows: list[ResultRow]
    records: list[RunRecord]
    executed: list[RunKey]
    skipped: list[RunKey]
    results_csv: Path
    runs_csv: Path
    markdown: Path
    plots: dict[str, Path]

    @property
    def failed(self) -> list[RunRecord]:
        """Runs whose latest attempt failed."""
        return [record for record in self.records if record.status == "failed"]


def write_report(config: BenchmarkConfig, store: RunStore) -> tuple[Path, list[RunRecord], list[ResultRow], dict]:
    """Write a new report folder ``<output>/reports/v<N>`` from the records of the grid's runs."""
    from anomalib.utils.path import create_versioned_dir  # noqa: PLC0415

    records = [record for key in config.grid() if (record := store.latest(key)) is not None]
    rows = summarise(records, config)
    report_dir = create_versioned_dir(config.output / "reports").resolve()
    (report_dir / "config.yaml").write_text(
        yaml.safe_dump({**config.raw, "output": str(config.output)}, sort_keys=False)
    )
    _write_results_csv(report_dir / "results.csv", rows)
    _write_runs_csv(report_dir / "runs.csv", records)
    _write_markdown(report_dir / "results.md", rows, records, config)
    models = [model.name for model in config.models]
    plots = {data.name: _plot(report_dir / f"plot_{data.name}.png", rows, data, models) for data in config.data}
    return report_dir, records, rows, plots


def run_benchmark(
    config: BenchmarkConfig | str | Path | Mapping[str, Any],
    *,
    output: str | Path | None = None,
    retry_failed: bool = True,
    show_progress: bool = True,
) -> BenchmarkResult:
    """Run the grid (skipping runs that finished before in the same output folder) and write a new report.

    Args:
        config: A :class:`BenchmarkConfig`, a YAML file or its content as a mapping.
        output: Output folder; overrides the configuration's.
        retry_failed: Run again the runs whose earlier attempt failed. Defaults to ``True``.
        show_progress: Show a progress bar over the grid. Defaults to ``True``.

    Returns:
        The report paths, the rows and the run records.

    Raises:
        BenchmarkConfigError: The configuration is invalid, or the output folder holds finished runs of a different
            configuration under the same names.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    if not isinstance(config, BenchmarkConfig):
        config = load_config(config, output=output)
    elif output is not None:
        config = BenchmarkConfig(**{**config.__dict__, "output": Path(output)})
    store = RunStore(config.output / "runs")
    mismatches = _configuration_mismatches(config, store)
    if mismatches:
        listed = "\n  ".join(mismatches[:5]) + (
            f"\n  ... and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
        )
        msg = (
            f"{config.output} holds finished runs of another configuration under the same names; their results would "
            f"be mixed with this one's. Use another output folder, or rename the model or data set:\n  {listed}"
        )
        raise BenchmarkConfigError(msg)
    grid = config.grid()
    executed: list[RunKey] = []
    skipped: list[RunKey] = []
    logger.info("Benchmark %s: %d runs, output %s", config.source, len(grid), config.output)
    with tqdm(total=len(grid), desc="benchmark", unit="run", disable=not show_progress, dynamic_ncols=True) as progress:
        for key in grid:
            progress.set_postfix_str(key.label)
            earlier = store.latest(key)
            if earlier is not None and (earlier.status == "finished" or not retry_failed):
                skipped.append(key)
                progress.update()
                continue
            record = _execute(key, config)
            store.save(record)
            executed.append(key)
            outcome = (
                ", ".join(
                    f"{METRIC_LABELS[n]} {100 * record.metrics[n]:.1f}"
                    for n in BENCHMARK_METRICS
                    if n in record.metrics
                )
                if record.status == "finished"
                else f"FAILED: {record.error}"
            )
            progress.write(f"{key.label}: {outcome}")
            progress.update()
    report_dir, records, rows, plots = write_report(config, store)
    return BenchmarkResult(
        report_dir=report_dir,
        rows=rows,
        records=records,
        executed=executed,
        skipped=skipped,
        results_csv=report_dir / "results.csv",
        runs_csv=report_dir / "runs.csv",
        markdown=report_dir / "results.md",
        plots=plots,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Command line: anomalib-adaclip benchmark --config configs/benchmark/<name>.yaml
# ----------------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip benchmark",
        description=(
            "Benchmark AdaCLIP against other anomalib models (zero-shot, few-shot or one-class) on a grid of data "
            "sets, categories and seeds, with anomalib's Engine and the same metrics for every model. Runs that "
            "finished in the same output folder are skipped; results go to <output>/reports/v<N>/."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="benchmark YAML (see configs/benchmark/)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (overrides the config's 'output')")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the runs and which of them have finished; run nothing"
    )
    parser.add_argument(
        "--skip-failed", action="store_true", help="do not run again the runs whose earlier attempt failed"
    )
    return parser


def _print_plan(config: BenchmarkConfig) -> None:
    store = RunStore(config.output / "runs")
    grid = config.grid()
    print(f"{len(grid)} runs ({config.source}), output {config.output}:")
    for key in grid:
        record = store.latest(key)
        state = "pending" if record is None else record.status
        print(f"  {state:<9} {key.label}")


def _print_means(result: BenchmarkResult) -> None:
    names = [name for name in BENCHMARK_METRICS if any(row.metrics[name] is not None for row in result.rows)]
    print("Means over the categories (percent):")
    print("  " + " | ".join(["data set", "model", *(METRIC_LABELS[name] for name in names)]))
    for row in result.rows:
        if row.category == MEAN_CATEGORY:
            values = ["–" if row.metrics[n] is None else f"{100 * row.metrics[n]:.1f}" for n in names]
            print("  " + " | ".join([row.dataset, row.model, *values]))


def main(argv: Sequence[str] | None = None) -> int:
    """``anomalib-adaclip benchmark``; returns 0 when every run finished, 1 when some failed, 2 on a bad configuration.

    Args:
        argv: Arguments after ``benchmark``. Defaults to ``sys.argv[1:]``.
    """
    from anomalib.loggers import configure_logger  # noqa: PLC0415

    arguments = _parser().parse_args(argv)
    configure_logger()
    try:
        config = load_config(arguments.config, output=arguments.output)
        if arguments.dry_run:
            _print_plan(config)
            return 0
        result = run_benchmark(config, retry_failed=not arguments.skip_failed)
    except BenchmarkConfigError as error:
        print(f"anomalib-adaclip benchmark: error: {error}", file=sys.stderr)
        return 2
    print(f"Runs: {len(result.executed)} executed, {len(result.skipped)} skipped (finished earlier).")
    _print_means(result)
    print(f"Report: {result.report_dir} (results.csv, runs.csv, results.md, plot_<dataset>.png)")
    if result.failed:
        print(f"{len(result.failed)} run(s) failed; see {result.markdown} (a rerun tries them again).", file=sys.stderr)
        return 1
    return 0
