"""The benchmark configuration: the YAML schema, its validation and the grid of runs it describes.

A configuration file (``configs/benchmark/*.yaml``) has these top-level keys (:data:`CONFIG_KEYS`)::

    models:                # list of ModelSpec entries: name, class_path, init_args, init_args_by_dataset
    data:                  # list of DataSpec entries: name, class_path, init_args, categories
    seeds: [0]             # one run per seed
    output: results/...    # output folder; defaults to results/benchmark/<file name>
    engine: {...}          # Lightning Trainer arguments over DEFAULT_ENGINE_ARGUMENTS
    visualize: false       # keep the models' visualizers
    score_normalization: false  # metrics on post-processed (true) or raw (false) scores

:func:`load_config` reads and checks it without building anything: class paths are imported and every ``init_args``
is type-checked against its constructor, so a typo fails in seconds rather than hours into the grid. The entries
themselves (:class:`~anomalib_adaclip.benchmark.specs.ModelSpec`, :class:`~anomalib_adaclip.benchmark.specs.DataSpec`)
and how they are built live in :mod:`anomalib_adaclip.benchmark.specs`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .specs import (
    CATEGORY_PLACEHOLDER,
    MUTUAL_ARGUMENT,
    RARITY_ARGUMENT,
    DataSpec,
    ModelSpec,
    has_placeholder,
    parse_arguments,
)

__all__ = [
    "CONFIG_KEYS",
    "DATA_KEYS",
    "DEFAULT_ENGINE_ARGUMENTS",
    "MANAGED_ENGINE_ARGUMENTS",
    "MODEL_KEYS",
    "NO_CATEGORY_FOLDER",
    "SHORT_NAME_MODULES",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "RunKey",
    "load_config",
]

NO_CATEGORY_FOLDER = "_"
#: The top-level keys a benchmark configuration may have.
CONFIG_KEYS = ("models", "data", "seeds", "output", "engine", "visualize", "score_normalization")
MODEL_KEYS = ("name", "class_path", "init_args", "init_args_by_dataset", "train_images")
DATA_KEYS = ("name", "class_path", "init_args", "categories")
#: The Engine's arguments of every run; a configuration's ``engine`` section overrides them.
DEFAULT_ENGINE_ARGUMENTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
MANAGED_ENGINE_ARGUMENTS = ("default_root_dir", "callbacks")
SHORT_NAME_MODULES = {"model": ("anomalib_adaclip", "anomalib.models"), "data": ("anomalib.data",)}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class BenchmarkConfigError(ValueError):
    """A benchmark configuration that cannot run; the message names the file, the entry and what was expected."""


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


def _resolve_class(class_path: Any, kind: Literal["model", "data"], where: str) -> type:
    from anomalib.data import AnomalibDataModule  # noqa: PLC0415
    from anomalib.models import AnomalibModule  # noqa: PLC0415

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
        parse_arguments(target, arguments, skip)
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
    if not categories and has_placeholder(init_args):
        msg = f"{where}: init_args use {CATEGORY_PLACEHOLDER} but no categories are listed."
        raise BenchmarkConfigError(msg)
    if categories and not spec.takes_category and not has_placeholder(init_args):
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
    train_images = entry.get("train_images")
    if train_images is not None and (
        isinstance(train_images, bool) or not isinstance(train_images, int) or train_images < 1
    ):
        msg = f"{where}: train_images must be a positive number of training images (k-shot), got {train_images!r}."
        raise BenchmarkConfigError(msg)
    spec = ModelSpec(name, entry["class_path"], init_args, by_dataset, model_class, train_images)
    for dataset in dataset_names:
        arguments = spec.arguments_for(dataset)
        if "evaluator" in arguments:
            msg = f"{where}: leave out 'evaluator': the benchmark gives every model the same metrics."
            raise BenchmarkConfigError(msg)
        _check_moved(model_class, arguments, where)
        _check_group_class(spec, arguments, where)
        _check_arguments(model_class, arguments, frozenset({"evaluator"}), f"{where} on {dataset}")
        _check_mutual(spec, dataset, arguments, f"{where} on {dataset}")
        _check_rarity(spec, dataset, arguments, f"{where} on {dataset}")
    return spec


def _check_moved(model_class: type, arguments: Mapping[str, Any], where: str) -> None:
    """An old flat AdaCLIP argument (``k_shot``, ``mutual_weight``, ...): name its group, in one line."""
    from anomalib_adaclip.config import MOVED_ARGUMENTS, moved_argument_message  # noqa: PLC0415

    parameters = inspect.signature(model_class).parameters
    moved = [name for name in arguments if name in MOVED_ARGUMENTS and name not in parameters]
    if moved and "prompts" in parameters:
        msg = f"{where}: {moved_argument_message(moved[0])}"
        raise BenchmarkConfigError(msg)


def _check_group_class(spec: ModelSpec, arguments: Mapping[str, Any], where: str) -> None:
    """Mutual- or rarity-scoring settings on a model that has none: say so, rather than jsonargparse's unknown key."""
    parameters = inspect.signature(spec.model_class).parameters
    for argument, what, mode in ((MUTUAL_ARGUMENT, "mutual-scoring", "mutual_scoring"),
                                 (RARITY_ARGUMENT, "rarity-scoring", "online")):  # fmt: skip
        if argument in arguments and argument not in parameters:
            msg = (
                f"{where}: '{argument}' is the {what} group of anomalib_adaclip.AdaCLIP; "
                f"{spec.model_class.__module__}.{spec.model_class.__qualname__} has none (the {mode} mode is "
                "AdaCLIP's)."
            )
            raise BenchmarkConfigError(msg)


def _check_mutual(spec: ModelSpec, dataset: str, arguments: Mapping[str, Any], where: str) -> None:
    """A mutual-scoring model's settings, checked as the model will check them, before any run starts."""
    from anomalib_adaclip.components.mutual_groups import check_mutual_scoring  # noqa: PLC0415

    try:
        if spec.mutual_settings(dataset) is None:
            return
        check_mutual_scoring(True, arguments.get("tiling") not in (None, False))
    except (TypeError, ValueError) as error:
        msg = f"{where}: {error}"
        raise BenchmarkConfigError(msg) from error


def _check_rarity(spec: ModelSpec, dataset: str, arguments: Mapping[str, Any], where: str) -> None:
    """An online model's settings, checked as the model will check them, before any run starts.

    The TPB weights file is not looked for here (``--dry-run`` lists a grid whose files are not fetched yet): a run
    whose file is missing fails with the file's name and the grid goes on.
    """
    from anomalib_adaclip.components.rarity import check_rarity_scoring  # noqa: PLC0415

    try:
        if spec.rarity_settings(dataset) is None:
            return
        check_rarity_scoring(
            True, arguments.get(MUTUAL_ARGUMENT) is not None, arguments.get("tiling") not in (None, False)
        )
    except (TypeError, ValueError) as error:
        msg = f"{where}: {error}"
        raise BenchmarkConfigError(msg) from error


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
