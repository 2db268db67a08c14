"""The entries of a benchmark grid: a model (:class:`ModelSpec`), a data set (:class:`DataSpec`), how to build them.

An entry is written as in anomalib's YAML configs: a ``class_path`` and its ``init_args``. The arguments are
type-checked and instantiated by the same machinery as anomalib's CLI (jsonargparse), so nested ``class_path`` blocks
work. Reading and checking the entries of a YAML file is :mod:`anomalib_adaclip.benchmark.config`'s job.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator
    from anomalib.models import AnomalibModule

__all__ = [
    "CATEGORY_PLACEHOLDER",
    "MODES",
    "MUTUAL_ARGUMENT",
    "MUTUAL_ARGUMENTS",
    "RARITY_ARGUMENT",
    "RARITY_ARGUMENTS",
    "RUNTIME_DATA_ARGUMENTS",
    "DataSpec",
    "ModelSpec",
    "has_placeholder",
    "parse_arguments",
]

CATEGORY_PLACEHOLDER = "{category}"
# Data arguments that do not change the numbers: they may differ between a run and its resumption.
RUNTIME_DATA_ARGUMENTS = frozenset({"num_workers", "eval_batch_size"})
# The constructor argument of a model that scores each test image against the others of its group (AdaCLIP's
# mutual scoring, after MuSc): a group of settings; a model has the mode when its class takes it and it is not None.
MUTUAL_ARGUMENT = "mutual"
# The settings of that group a run's mode is reported with.
MUTUAL_ARGUMENTS = ("weight", "group_size")
# The constructor argument of a model that scores each test image against the images before it (AdaCLIP's rarity
# scoring, after RareCLIP): its runs are online runs, each category scored in an order drawn with the run's seed.
RARITY_ARGUMENT = "rarity"
# The settings of that group a run's mode is reported with.
RARITY_ARGUMENTS = ("weight", "text_branch")
Mode = Literal[
    "zero_shot", "few_shot", "one_class", "mutual_scoring", "few_shot+mutual_scoring", "online", "few_shot+online"
]
# How the reports name a run's mode: anomalib's learning type, or mutual or online scoring on top of it.
MODES: dict[str, str] = {
    "zero_shot": "zero-shot",
    "few_shot": "few-shot",
    "one_class": "one-class",
    "mutual_scoring": "mutual scoring",
    "few_shot+mutual_scoring": "few-shot + mutual scoring",
    "online": "online",
    "few_shot+online": "few-shot + online",
}


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
        train_images: Fit the model on this many training images, drawn with the run's seed, instead of the whole
            training split: a k-shot column for models that learn from normal images (AnomalyDINO, PatchCore, ...).
            ``None`` uses the whole split.
    """

    name: str
    class_path: str
    init_args: dict[str, Any]
    init_args_by_dataset: dict[str, dict[str, Any]]
    model_class: type = field(compare=False, repr=False)
    train_images: int | None = None

    def arguments_for(self, dataset: str) -> dict[str, Any]:
        """The constructor arguments on data set ``dataset``."""
        return {**self.init_args, **self.init_args_by_dataset.get(dataset, {})}

    def mutual_settings(self, dataset: str) -> dict[str, Any] | None:
        """The mutual-scoring settings on ``dataset`` (weight and group size, defaults filled in), ``None`` when off.

        Read from the configuration (nothing is built): ``None`` for a class without a ``mutual`` argument and for
        ``mutual: null``.
        """
        from anomalib_adaclip.config import MutualGroupConfig  # noqa: PLC0415

        return self._group_settings(dataset, MUTUAL_ARGUMENT, MutualGroupConfig, MUTUAL_ARGUMENTS)

    def rarity_settings(self, dataset: str) -> dict[str, Any] | None:
        """The rarity-scoring settings on ``dataset`` (weight and text branch, defaults filled in), ``None`` when off.

        Read from the configuration (nothing is built): ``None`` for a class without a ``rarity`` argument and for
        ``rarity: null``.
        """
        from anomalib_adaclip.config import RarityGroupConfig  # noqa: PLC0415

        return self._group_settings(dataset, RARITY_ARGUMENT, RarityGroupConfig, RARITY_ARGUMENTS)

    def _group_settings(
        self, dataset: str, argument: str, group: type, reported: Sequence[str]
    ) -> dict[str, Any] | None:
        """The ``reported`` fields of settings group ``argument`` on ``dataset`` (defaults filled in), or ``None``."""
        if argument not in inspect.signature(self.model_class).parameters:
            return None
        given = self.arguments_for(dataset).get(argument)
        if given is None:
            return None
        from anomalib_adaclip.config import settings_group  # noqa: PLC0415

        settings = settings_group(given, group, argument).to_dict()
        return {name: settings[name] for name in reported}

    def online(self, dataset: str) -> bool:
        """Whether the model scores online on ``dataset`` (its rarity group is on): its outputs depend on the order."""
        return self.rarity_settings(dataset) is not None

    def mode(self, dataset: str, learning_type: str) -> Mode:
        """The run's mode: anomalib's ``learning_type`` of the built model, with mutual or online scoring on top."""
        if self.mutual_settings(dataset) is not None:
            extra = "mutual_scoring"
        elif self.online(dataset):
            extra = "online"
        else:
            return learning_type  # type: ignore[return-value]
        return extra if learning_type == "zero_shot" else f"{learning_type}+{extra}"  # type: ignore[return-value]

    def configuration_for(self, dataset: str) -> dict[str, Any]:
        """What a run record keeps of the model: class path and the arguments as configured."""
        configuration = {"class_path": self.class_path, "init_args": _plain(self.arguments_for(dataset))}
        if self.train_images is not None:
            configuration["train_images"] = self.train_images
        return configuration

    def build(self, dataset: str, evaluator: Evaluator | bool, visualize: bool) -> AnomalibModule:
        """Instantiate the model for data set ``dataset`` with the benchmark's evaluator.

        Args:
            dataset: Data set name (selects ``init_args_by_dataset``).
            evaluator: The evaluator every model gets, or ``False`` when the Engine runs it as a callback of its own.
            visualize: Keep the model's visualizer; otherwise it is turned off unless ``init_args`` set one.

        Returns:
            The model.
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


def has_placeholder(value: Any) -> bool:
    """Whether a string anywhere in ``value`` (nested mappings and lists included) contains ``{category}``."""
    if isinstance(value, str):
        return CATEGORY_PLACEHOLDER in value
    if isinstance(value, Mapping):
        return any(has_placeholder(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(has_placeholder(item) for item in value)
    return False


def parse_arguments(target: type, arguments: Mapping[str, Any], skip: frozenset[str]) -> Any:
    """Type-check ``arguments`` against ``target``'s constructor, as anomalib's CLI does; nothing is instantiated.

    Args:
        target: The class whose constructor takes the arguments.
        arguments: The ``init_args`` (nested ``class_path`` blocks allowed).
        skip: Constructor parameters the benchmark sets itself (left out of the check).

    Returns:
        jsonargparse's namespace of the parsed arguments (under ``init``).

    Raises:
        jsonargparse.ArgumentError: An argument is unknown or does not fit its type.
    """
    return _argument_parser(target, skip).parse_object({"init": dict(arguments)})


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


def _instantiate_arguments(target: type, arguments: Mapping[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    """Typed constructor keywords of ``target``: values checked and nested ``class_path`` blocks instantiated."""
    parser = _argument_parser(target, skip)
    namespace = parser.instantiate_classes(parse_arguments(target, arguments, skip))
    return namespace.init.as_dict()
