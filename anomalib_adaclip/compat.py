"""The one module that relies on private or unexported names of anomalib, Lightning and torch.

Everything else in the package uses only their public APIs; where no public way exists, it goes through this
module, and each use below says what it relies on. The package is checked against the versions in
:data:`TESTED_VERSIONS` (pyproject's upper bounds); :func:`check` verifies every reliance and fails with a message that
names the dependency and its installed version, and ``tests/unit/test_compat.py`` runs it. To support a new release:
run that test against it, fix what it names here (nowhere else), then raise the bound in pyproject (see
CONTRIBUTING.md, "Dependencies").

Not listed because they are public by their own rules: ``NamedTuple._asdict`` (Python's documented namedtuple API) and
``AnomalibDataModule._setup`` (the abstract method anomalib requires every data module to implement).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import torch
from anomalib.data import AnomalibDataModule
from anomalib.post_processing import PostProcessor
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from torchmetrics import Metric

__all__ = [
    "BTECH_CATEGORIES",
    "MPDD_CATEGORIES",
    "MVTEC_AD_CATEGORIES",
    "MVTEC_AD_DOWNLOAD_INFO",
    "TESTED_VERSIONS",
    "VISA_CATEGORIES",
    "CompatibilityError",
    "PostProcessorHooks",
    "TestSplitHook",
    "anomalib_checkpoint_io",
    "anomalib_safe_globals",
    "batch_sampler_of",
    "check",
    "create_versioned_dir",
    "engine_results_folder",
    "extract_transforms_by_type",
    "generate_output_filename",
    "get_exportable_transform",
    "ignore_in_ddp",
    "ordered_subsample",
    "regroup_loaders",
    "release_predict_batch_indices",
    "resolve_versioned_path",
    "restore_loaders",
    "setup_predict_data",
]

#: The minor series each reliance below was checked against (pyproject pins `<` the next minor of each).
TESTED_VERSIONS = {"anomalib": "2.7", "lightning": "2.6", "torch": "2.14"}


class CompatibilityError(ImportError):
    """A private or unexported name this package relies on is gone or changed in the installed dependency."""


def _changed(package: str, what: str) -> CompatibilityError:
    return CompatibilityError(
        f"anomalib-adaclip relies on {what} of {package}, which the installed {package} {version(package)} does not "
        f"provide as expected (checked against {package} {TESTED_VERSIONS[package]}.x). Install {package} "
        f"{TESTED_VERSIONS[package]}.x, or adapt anomalib_adaclip/compat.py to this release."
    )


def _unexported(package: str, module: str, name: str) -> Any:
    """``module.name``, a name that ``package`` defines only below the modules it re-exports from."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise _changed(package, f"{module}.{name}") from error


# ----------------------------------------------------------------------------------------------------------------------
# Names anomalib defines but does not re-export from a public package
# ----------------------------------------------------------------------------------------------------------------------
# The category lists of anomalib's data sets live only in their dataset modules.
MVTEC_AD_CATEGORIES: tuple[str, ...] = tuple(
    _unexported("anomalib", "anomalib.data.datasets.image.mvtecad", "CATEGORIES")
)
VISA_CATEGORIES: tuple[str, ...] = tuple(_unexported("anomalib", "anomalib.data.datasets.image.visa", "CATEGORIES"))
MPDD_CATEGORIES: tuple[str, ...] = tuple(_unexported("anomalib", "anomalib.data.datasets.image.mpdd", "CATEGORIES"))
BTECH_CATEGORIES: tuple[str, ...] = tuple(_unexported("anomalib", "anomalib.data.datasets.image.btech", "CATEGORIES"))
# Where anomalib downloads MVTec AD from (a DownloadInfo with name, url, hashsum): the quick start's message cites it.
MVTEC_AD_DOWNLOAD_INFO: Any = _unexported("anomalib", "anomalib.data.datamodules.image.mvtecad", "DOWNLOAD_INFO")
# Finds the Resize of a pre-processor's transform (nested Compose included).
extract_transforms_by_type: Callable[..., list[Any]] = _unexported(
    "anomalib", "anomalib.data.transforms.utils", "extract_transforms_by_type"
)
# The export-safe copy of a transform that anomalib's PreProcessor builds for exports.
get_exportable_transform: Callable[[Any], Any] = _unexported(
    "anomalib", "anomalib.pre_processing.utils.transform", "get_exportable_transform"
)
# The context that allows anomalib's (and extra) classes in `torch.load(weights_only=True)`.
anomalib_safe_globals: Callable[..., Any] = _unexported(
    "anomalib", "anomalib.utils.serialization", "anomalib_safe_globals"
)
# The next free `vN` folder (and the `latest` link) of anomalib's results layout.
create_versioned_dir: Callable[..., Any] = _unexported("anomalib", "anomalib.utils.path", "create_versioned_dir")
# The concrete folder behind a `latest` link of anomalib's results layout (the Engine's rule for test and predict).
resolve_versioned_path: Callable[..., Any] = _unexported("anomalib", "anomalib.utils.path", "resolve_versioned_path")
# The visualiser's output file name for an image, as anomalib's ImageVisualizer names it.
generate_output_filename: Callable[..., Any] = _unexported(
    "anomalib", "anomalib.utils.path", "generate_output_filename"
)


def anomalib_checkpoint_io(**kwargs: Any) -> Any:
    """The checkpoint IO with anomalib's safe globals, as anomalib's Engine installs it (imported on use: heavy)."""
    return _unexported("anomalib", "anomalib.engine.plugins.checkpoint_io", "AnomalibCheckpointIO")(**kwargs)


def engine_results_folder(default_root_dir: str | Path, model_name: str, data_name: str, category: str) -> Path:
    """The results folder of anomalib's ``Engine.test``/``predict`` (``trainer.default_root_dir`` during the run).

    Relies on ``Engine._setup_workspace`` (not versioned for test and predict): ``<default_root_dir>/<model
    name>/<data module name>/<category>/latest``, the ``latest`` link followed (``""`` name and category for a
    folder of images).
    """
    return Path(resolve_versioned_path(Path(default_root_dir) / model_name / data_name / category / "latest"))


# ----------------------------------------------------------------------------------------------------------------------
# anomalib's PostProcessor: private members AdaCLIPPostProcessor builds on
# ----------------------------------------------------------------------------------------------------------------------
Level = Literal["image", "pixel"]


class PostProcessorHooks(PostProcessor):
    """anomalib's :class:`~anomalib.post_processing.PostProcessor` with public names for the members it keeps private.

    Relies on: ``PostProcessor._normalize`` (a static method that ``forward`` and ``normalize_batch`` call as
    ``self._normalize(preds, min, max, threshold)``); the metrics ``_{level}_threshold_metric`` (F1-adaptive
    threshold) and ``_{level}_min_max_metric``; the buffers ``_{level}_threshold``; and the F1-adaptive threshold's
    ``_has_anomalous_samples()`` / ``_has_normal_samples()``.
    """

    @staticmethod
    def anomalib_normalize(
        preds: torch.Tensor | None, norm_min: torch.Tensor, norm_max: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor | None:
        """The min-max normalisation around the threshold that anomalib applies."""
        return PostProcessor._normalize(preds, norm_min, norm_max, threshold)

    @staticmethod
    def normalize_values(
        preds: torch.Tensor | None, norm_min: torch.Tensor, norm_max: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor | None:
        """The normalisation ``forward`` and ``normalize_batch`` apply; a subclass may override it."""
        return PostProcessorHooks.anomalib_normalize(preds, norm_min, norm_max, threshold)

    def _normalize(
        self, preds: torch.Tensor | None, norm_min: torch.Tensor, norm_max: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor | None:
        return self.normalize_values(preds, norm_min, norm_max, threshold)

    def statistics_metrics(self, level: Level) -> tuple[Metric, Metric]:
        """The F1-adaptive threshold metric and the min-max metric that collect a level's validation statistics."""
        return getattr(self, f"_{level}_threshold_metric"), getattr(self, f"_{level}_min_max_metric")

    @staticmethod
    def has_both_labels(threshold_metric: Metric) -> bool:
        """Whether the F1-adaptive threshold metric has seen normal and anomalous samples."""
        return threshold_metric._has_anomalous_samples() and threshold_metric._has_normal_samples()

    def learned_threshold(self, level: Level) -> torch.Tensor:
        """The threshold learned for a level (the buffer itself; NaN while none is learned)."""
        return getattr(self, f"_{level}_threshold")

    def forget_statistics(self, level: Level) -> None:
        """Set a level's learned threshold and min-max statistics back to "not learned" (NaN)."""
        for statistic in (self.learned_threshold(level), getattr(self, f"{level}_min"), getattr(self, f"{level}_max")):
            statistic.fill_(float("nan"))


# ----------------------------------------------------------------------------------------------------------------------
# anomalib's data module: the test-split hook
# ----------------------------------------------------------------------------------------------------------------------
class TestSplitHook(AnomalibDataModule):
    """anomalib's data module with a public name for its test-split step.

    Relies on: ``AnomalibDataModule._create_test_split`` (called by ``setup`` after ``_setup``; it moves or
    synthesises normal test images according to ``test_split_mode``).
    """

    __test__ = False  # not a pytest test class, despite its name

    def _create_test_split(self) -> None:
        self.create_test_split()

    def create_test_split(self) -> None:
        """The test split of anomalib; a subclass may override it and call ``super().create_test_split()``."""
        super()._create_test_split()


# ----------------------------------------------------------------------------------------------------------------------
# torch: parameters DDP does not synchronise
# ----------------------------------------------------------------------------------------------------------------------
def ignore_in_ddp(module: torch.nn.Module, names: Sequence[str]) -> None:
    """Exclude parameters/buffers (fully qualified names) of ``module`` from DistributedDataParallel's gradient sync.

    Relies on: ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` (torch's documented workaround
    until a public API exists, pytorch issue 43690); it must run before the module is wrapped.
    """
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(names))


# ----------------------------------------------------------------------------------------------------------------------
# Lightning's predict loop
# ----------------------------------------------------------------------------------------------------------------------
def setup_predict_data(trainer: Trainer) -> None:
    """Let the predict loop build its data loaders now (it builds them again, from the same data sets, when it starts).

    Relies on: ``trainer.predict_loop.setup_data()`` (a method of Lightning's private ``_PredictionLoop``).
    """
    trainer.predict_loop.setup_data()


class _RegroupedSource:
    """A loop's source of data loaders, with every ``DataLoader`` it gives passed through ``regroup``."""

    def __init__(self, source: Any, regroup: Callable[[Any], Any]) -> None:
        self.source, self.regroup = source, regroup

    def dataloader(self) -> Any:
        from lightning_utilities.core.apply_func import apply_to_collection  # noqa: PLC0415
        from torch.utils.data import DataLoader  # noqa: PLC0415

        return apply_to_collection(self.source.dataloader(), DataLoader, self.regroup)

    def is_defined(self) -> bool:
        return self.source.is_defined()

    def is_module(self) -> bool:
        return self.source.is_module()

    @property
    def instance(self) -> Any:
        return self.source.instance

    @instance.setter
    def instance(self, value: Any) -> None:  # the data connector attaches each call's data here
        self.source.instance = value

    @property
    def name(self) -> str:
        return self.source.name


def _stage_loops(trainer: Trainer) -> dict[str, Any]:
    return {
        "fit": trainer.fit_loop.epoch_loop.val_loop,
        "validate": trainer.validate_loop,
        "test": trainer.test_loop,
        "predict": trainer.predict_loop,
    }


def regroup_loaders(trainer: Trainer, stage: str, regroup: Callable[[Any], Any]) -> None:
    """Have the loop of this run's ``stage`` request its evaluation loaders through ``regroup`` (a loader each).

    Called from a callback's ``setup``: the loop requests its loaders after it, and Lightning then processes the
    regrouped loaders as any (distributed sampler, the predict loop's index tracking). ``fit`` regroups its validation
    loaders. :func:`restore_loaders` undoes it (at the run's end).

    Relies on: each of the Trainer's loops keeping its source of loaders as ``_data_source`` (an object with
    ``dataloader()``, ``is_defined()``, ``is_module()``, ``instance`` and ``name``), whose ``dataloader()`` the loop's
    ``setup_data`` calls inside Lightning's ``_request_dataloader``, so that a ``BatchSampler`` subclass built in
    ``regroup`` has its arguments recorded and can be re-created with Lightning's (distributed) sampler.
    """
    loop = _stage_loops(trainer)[stage]
    source = loop._data_source
    if isinstance(source, _RegroupedSource):
        source = source.source
    loop._data_source = _RegroupedSource(source, regroup)


def restore_loaders(trainer: Trainer) -> None:
    """Undo :func:`regroup_loaders` on every loop of the Trainer (nothing where it was not applied)."""
    for loop in _stage_loops(trainer).values():
        if isinstance(loop._data_source, _RegroupedSource):
            loop._data_source = loop._data_source.source


def batch_sampler_of(loader: Any) -> Any:
    """A processed predict loader's own batch sampler (``None`` without one).

    Relies on: the predict loop wrapping the loader's batch sampler in ``_IndexBatchSamplerWrapper``, which keeps the
    wrapped one as ``_batch_sampler``.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    return getattr(batch_sampler, "_batch_sampler", batch_sampler)


def ordered_subsample(dataset: Any, indices: Sequence[int]) -> Any:
    """``dataset.subsample(indices)`` with its images in the order of ``indices`` (a copy; ``dataset`` is unchanged).

    anomalib's ``AnomalibDataset.subsample`` keeps the images at ``indices``, but its ``samples`` setter sorts every
    frame it is given by image path, so no public call keeps another order.

    Relies on: ``AnomalibDataset._samples`` holding the frame that ``samples`` returns, and ``__getitem__`` reading the
    image, mask and label of position ``i`` from ``samples.iloc[i]``.
    """
    subset = dataset.subsample(indices)  # refuses duplicates, copies the data set and its transforms
    subset._samples = dataset.samples.iloc[list(indices)].reset_index(drop=True)
    return subset


def release_predict_batch_indices(loader: Any, batch_idx: int) -> None:
    """Drop the data-set indices Lightning keeps for a finished predict batch (memory that grows with the run).

    Relies on: the predict loop wrapping the loader's batch sampler in ``_IndexBatchSamplerWrapper``, whose
    ``seen_batch_indices`` list holds each batch's indices until the run ends and is read only at the current batch's
    position; a finished entry is replaced by ``None``. Without the wrapper (or the list) nothing happens.
    """
    seen = getattr(getattr(loader, "batch_sampler", None), "seen_batch_indices", None)
    if isinstance(seen, list) and 0 <= batch_idx < len(seen):
        seen[batch_idx] = None


# ----------------------------------------------------------------------------------------------------------------------
# The check of every reliance
# ----------------------------------------------------------------------------------------------------------------------
def _check_post_processor() -> None:
    processor = PostProcessor()
    for level in ("image", "pixel"):
        for name in (f"_{level}_threshold_metric", f"_{level}_min_max_metric", f"_{level}_threshold"):
            if not hasattr(processor, name):
                raise _changed("anomalib", f"PostProcessor.{name}")
        metric = getattr(processor, f"_{level}_threshold_metric")
        if not all(callable(getattr(metric, name, None)) for name in ("_has_anomalous_samples", "_has_normal_samples")):
            raise _changed("anomalib", "F1AdaptiveThreshold._has_anomalous_samples/_has_normal_samples")
    value = torch.tensor([0.2, 0.6])
    try:
        normalized = PostProcessor._normalize(value, torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.5))
    except (AttributeError, TypeError) as error:
        raise _changed("anomalib", "PostProcessor._normalize(preds, norm_min, norm_max, threshold)") from error
    if normalized is None or not torch.allclose(normalized, value):  # (x - 0.5) / 1 + 0.5 on a [0, 1] range
        raise _changed("anomalib", "PostProcessor._normalize's min-max formula")


def _check_data_module() -> None:
    if not callable(getattr(AnomalibDataModule, "_create_test_split", None)):
        raise _changed("anomalib", "AnomalibDataModule._create_test_split")


def _check_ordered_subsample() -> None:
    from anomalib.data.datasets.base import AnomalibDataset  # noqa: PLC0415
    from pandas import DataFrame  # noqa: PLC0415

    class Files(AnomalibDataset):
        pass

    files = [str(Path(__file__)), str(Path(torch.__file__))]  # two files that exist (the setter checks it)
    dataset = Files()
    dataset.samples = DataFrame({"image_path": sorted(files), "split": ["test", "test"]})
    try:
        ordered = ordered_subsample(dataset, [1, 0])
    except AttributeError as error:
        raise _changed("anomalib", "AnomalibDataset._samples") from error
    if list(ordered.samples.image_path) != sorted(files)[::-1] or list(dataset.samples.image_path) != sorted(files):
        raise _changed("anomalib", "AnomalibDataset._samples (the frame that samples returns)")


def _check_ddp() -> None:
    module = torch.nn.Linear(1, 1)
    try:
        ignore_in_ddp(module, ["bias"])
    except AttributeError as error:
        raise _changed("torch", "DistributedDataParallel._set_params_and_buffers_to_ignore_for_model") from error
    if getattr(module, "_ddp_params_and_buffers_to_ignore", None) != ["bias"]:
        raise _changed("torch", "DistributedDataParallel._set_params_and_buffers_to_ignore_for_model's effect")


def _check_predict_loop() -> None:
    from lightning.pytorch import Trainer  # noqa: PLC0415

    if not callable(getattr(Trainer(logger=False, enable_progress_bar=False).predict_loop, "setup_data", None)):
        raise _changed("lightning", "Trainer.predict_loop.setup_data()")
    try:
        from lightning.pytorch.overrides.distributed import _IndexBatchSamplerWrapper  # noqa: PLC0415
    except ImportError as error:
        raise _changed("lightning", "lightning.pytorch.overrides.distributed._IndexBatchSamplerWrapper") from error
    wrapper = _IndexBatchSamplerWrapper(torch.utils.data.BatchSampler(range(4), 2, drop_last=False))
    list(wrapper)
    if getattr(wrapper, "seen_batch_indices", None) != [[0, 1], [2, 3]]:
        raise _changed("lightning", "_IndexBatchSamplerWrapper.seen_batch_indices")
    if not isinstance(batch_sampler_of(SimpleNamespace(batch_sampler=wrapper)), torch.utils.data.BatchSampler):
        raise _changed("lightning", "_IndexBatchSamplerWrapper._batch_sampler")


def _check_regroup_loaders() -> None:
    from lightning.pytorch import Trainer  # noqa: PLC0415
    from lightning.pytorch.trainer.connectors.data_connector import _request_dataloader  # noqa: PLC0415
    from lightning.pytorch.trainer.states import RunningStage  # noqa: PLC0415
    from lightning.pytorch.utilities.data import _update_dataloader  # noqa: PLC0415
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler  # noqa: PLC0415

    class Fixed(BatchSampler):
        def __init__(self, sampler: Any, batches: list[list[int]], drop_last: bool = False) -> None:
            super().__init__(sampler, 1, drop_last)
            self.batches = batches

        def __iter__(self) -> Any:
            return iter(self.batches)

    trainer = Trainer(logger=False, enable_progress_bar=False)
    for stage, loop in _stage_loops(trainer).items():
        source = getattr(loop, "_data_source", None)
        if not all(hasattr(source, name) for name in ("dataloader", "is_defined", "is_module", "instance", "name")):
            raise _changed("lightning", f"the {stage} loop's _data_source")
    data = list(range(4))
    trainer.predict_loop._data_source.instance = DataLoader(data)
    regroup_loaders(trainer, "predict", lambda loader: DataLoader(data, batch_sampler=Fixed(loader.sampler, [[2, 3]])))
    loader = _request_dataloader(trainer.predict_loop._data_source)
    distributed = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    try:
        batches = list(_update_dataloader(loader, distributed, mode=RunningStage.PREDICTING).batch_sampler)
    except TypeError as error:
        raise _changed("lightning", "re-creating a BatchSampler subclass with its recorded arguments") from error
    if batches != [[2, 3]]:
        raise _changed("lightning", "re-creating a BatchSampler subclass with its recorded arguments")
    restore_loaders(trainer)
    if isinstance(trainer.predict_loop._data_source, _RegroupedSource):
        raise _changed("lightning", "the predict loop's _data_source")


def check() -> None:
    """Verify every reliance of this module on the installed anomalib, Lightning and torch.

    The unexported names are checked when this module is imported.

    Raises:
        CompatibilityError: One has changed; the message names the dependency, its version and what changed.
    """
    _unexported("anomalib", "anomalib.engine.plugins.checkpoint_io", "AnomalibCheckpointIO")
    from anomalib.engine import Engine  # noqa: PLC0415

    if not callable(getattr(Engine, "_setup_workspace", None)):  # the rule engine_results_folder repeats
        raise _changed("anomalib", "Engine._setup_workspace()")
    _check_post_processor()
    _check_data_module()
    _check_ordered_subsample()
    _check_ddp()
    _check_predict_loop()
    _check_regroup_loaders()
