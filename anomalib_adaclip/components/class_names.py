"""Class names per image: one run over many object types, each image prompted with its own name.

AdaCLIP's prompts name the object ("a bad photo of a damaged screw."). The run has one class name
(:func:`run_class_name`: the ``class_name`` argument, else the data module's category, else the name a loaded
checkpoint stored, else ``"object"``). A folder of mixed products needs a name per image: :class:`ClassNameRules`
derives it from the image path, and :class:`BatchClassNames` applies the rules to each batch:

1. ``classes.map``: entries are tried in their order and the first that matches wins. A key with a glob
   character (``*``, ``?``, ``[``) is a pattern matched against the image path with :func:`fnmatch.fnmatchcase`
   (case-sensitive; ``*`` also matches ``/``); a relative pattern may match the end of the path, so
   ``"screws/*.png"`` matches ``/data/screws/a.png``. Any other key is a folder name (or a few folders,
   ``"line1/screws"``) that must appear, whole, among the image's parent folders.
2. ``classes.from_parent``: the name of the image's parent folder.
3. No match: ``None``, and the caller uses the run's class name.

Example:
    >>> from anomalib_adaclip.components.class_names import ClassNameRules
    >>> rules = ClassNameRules({"*/bolt_*.png": "bolt", "nuts": "metal-nut"}, from_parent=True)
    >>> rules.match("/data/line1/bolt_003.png")
    ('bolt', "pattern '*/bolt_*.png' of classes.map")
    >>> rules.match("/data/nuts/top/004.png")
    ('metal-nut', "folder 'nuts' of classes.map")
    >>> rules.match("/data/washer/005.png")
    ('washer', 'the parent folder')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import PurePath
from typing import Any, Protocol, runtime_checkable

from anomalib_adaclip.config import DEFAULT_CLASS_NAME, ClassConfig
from anomalib_adaclip.model.class_choice import check_candidates
from anomalib_adaclip.model.prompting import format_class_name

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_CLASS_NAME_KEY",
    "BatchClassNames",
    "ClassNameRules",
    "ClassNamedModule",
    "ClassNames",
    "run_class_name",
]

GLOB_CHARACTERS = frozenset("*?[")
# The class name the prompts used, kept in Lightning checkpoints: an export from a checkpoint has no data module.
CHECKPOINT_CLASS_NAME_KEY = "adaclip_class_name"


def _is_pattern(key: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in key)


@dataclass(frozen=True)
class ClassNameRules:
    """Rules that give an image its class name from its path.

    Args:
        class_name_map: Glob pattern or folder name -> class name, tried in order. Defaults to none.
        from_parent: Use the parent folder's name when no entry of the map matches. Defaults to ``False``.

    Raises:
        ValueError: A key or a class name is not a non-empty string.
    """

    class_name_map: Mapping[str, str] = field(default_factory=dict)
    from_parent: bool = False

    def __post_init__(self) -> None:
        """Check the map and keep a plain copy of it."""
        entries = dict(self.class_name_map or {})
        for key, name in entries.items():
            if not isinstance(key, str) or not key.strip("/ "):
                msg = f"classes.map keys must be glob patterns or folder names, got {key!r}."
                raise ValueError(msg)
            if not isinstance(name, str) or not name.strip():
                msg = f"classes.map[{key!r}] must be a non-empty class name, got {name!r}."
                raise ValueError(msg)
        object.__setattr__(self, "class_name_map", entries)

    @property
    def active(self) -> bool:
        """Whether any rule is set (else every image uses the run's class name)."""
        return bool(self.class_name_map) or self.from_parent

    def match(self, path: str | PurePath) -> tuple[str, str] | None:
        """The class name of an image and the rule that gave it, or ``None`` when no rule matches.

        Args:
            path: The image path as the data set gives it.
        """
        image_path = PurePath(path).as_posix()
        # Surrounding slashes make "folder appears whole among the parents" a plain substring test.
        parents = f"/{PurePath(path).parent.as_posix().strip('/')}/"
        for key, name in self.class_name_map.items():
            if _is_pattern(key):
                if fnmatchcase(image_path, key) or fnmatchcase(image_path, f"*/{key.lstrip('/')}"):
                    return name, f"pattern {key!r} of classes.map"
            elif f"/{key.strip('/')}/" in parents:
                return name, f"folder {key!r} of classes.map"
        if self.from_parent:
            parent = PurePath(path).parent.name
            if parent:
                return parent, "the parent folder"
        return None


@runtime_checkable
class ClassNamedModule(Protocol):
    """A Lightning module that names the object of every image it scores (AdaCLIP does)."""

    def image_class_names(self, batch: Any) -> list[str]:
        """The class name of every image of a batch."""


def run_class_name(argument: str | None, datamodule: Any, checkpoint_name: str | None) -> tuple[str, str]:
    """The class name of a run's prompts, and where it comes from.

    The ``class_name`` argument, else the data module's category (an empty one, as ``Folder`` has, counts as
    missing), else the name stored in a loaded Lightning checkpoint, else ``"object"``.
    """
    if argument:
        return argument, "classes.name"
    category = getattr(datamodule, "category", None)
    if isinstance(category, str) and category.strip():
        return category, f"the category of the data module {type(datamodule).__name__}"
    if checkpoint_name:
        return checkpoint_name, "the loaded checkpoint"
    return DEFAULT_CLASS_NAME, "the default: no classes.name and no data module category"


class BatchClassNames:
    """Class names of the images of each batch: their own, else from :class:`ClassNameRules` over their paths.

    Batches of :mod:`anomalib_adaclip.data` carry one class name per image (``class_name``) and keep them; anomalib's
    own batches carry none, and the rules apply to their image paths. Each class name is logged once per run (call
    :meth:`new_run` when a run starts) with the rule and the first image that gave it.

    Args:
        rules: The rules; inactive rules leave every image with the run's class name.
    """

    def __init__(self, rules: ClassNameRules) -> None:
        self.rules = rules
        self._logged: set[str] = set()

    def new_run(self) -> None:
        """Log each class name again in the next run."""
        self._logged = set()

    def _log_once(self, key: str, level: int, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.log(level, message, *args)

    def of(self, batch: Any, run_name: str) -> Sequence[str] | None:
        """Class names of a batch's images, or ``None`` when every image uses ``run_name``.

        ``None`` when no rule is set or the batch carries no image paths; images that no rule matches use
        ``run_name``.
        """
        own_names = getattr(batch, "class_name", None)
        if own_names is not None:
            return own_names
        if not self.rules.active:
            return None
        paths = getattr(batch, "image_path", None)
        if paths is None:
            self._log_once(
                "<no paths>",
                logging.WARNING,
                "classes.map/classes.from_parent need image paths, but the batches carry none: every image uses "
                "the run's class name %r.",
                run_name,
            )
            return None
        names = []
        for path in [paths] if isinstance(paths, str) else paths:
            match = self.rules.match(path)
            if match:
                name, rule = match
                self._log_once(name, logging.INFO, "AdaCLIP prompts use the class name %r for %s and others (%s).",
                               name, path, rule)  # fmt: skip
            else:
                name = run_name
                self._log_once(
                    f"<unmatched> {name}",
                    logging.WARNING,
                    "No classes.map rule matches %s: it and every other unmatched image use the run's class name %r.",
                    path,
                    name,
                )
            names.append(name)
        return names


class ClassNames:
    """The class names of one AdaCLIP model's prompts: per run, per image, in exports and in checkpoints.

    AdaCLIP owns one and tells it the run's data module and checkpoint; the part names the object of every image.

    Args:
        settings: The class-name settings (the argument, the per-image rules, the export names).
        check: The model's check of a class name (an empty or too long name raises ``ValueError``).

    Raises:
        ValueError: A bad rule, or an export name the prompts cannot use.
        TypeError: Export names given as a single string.
    """

    def __init__(self, settings: ClassConfig, check: Callable[[str], None]) -> None:
        self.settings = settings
        self._check = check
        self.batches = BatchClassNames(ClassNameRules(settings.map or {}, settings.from_parent))
        self.checkpoint_name: str | None = None  # the name a loaded Lightning checkpoint stored
        self.export_names: tuple[str, ...] | None = None
        self.set_export_names(settings.export_names)

    def run_name(self, datamodule: Any, logger_name: str = __name__) -> str:
        """The class name of a run with ``datamodule`` (:func:`run_class_name`), checked and logged; starts a run."""
        name, source = run_class_name(self.settings.name, datamodule, self.checkpoint_name)
        self._check(name)
        self.batches.new_run()
        logging.getLogger(logger_name).info(
            "AdaCLIP prompts use the class name %r (prompt text %r), from %s.", name, format_class_name(name), source
        )
        return name

    def of(self, batch: Any, run_name: str) -> Sequence[str] | None:
        """Class names of a batch's images, ``None`` when every image uses ``run_name`` (:class:`BatchClassNames`)."""
        return self.batches.of(batch, run_name)

    def of_images(self, batch: Any, run_name: str) -> list[str]:
        """The class name of every image of a batch: its own where a rule gives one, else ``run_name``."""
        names = self.batches.of(batch, run_name)
        return list(names) if names is not None else [run_name] * len(batch)

    def of_path(self, path: str, run_name: str) -> str:
        """The class name an image at ``path`` gets from the rules, else ``run_name``."""
        rules = self.batches.rules
        match = rules.match(path) if rules.active else None
        return match[0] if match else run_name

    def set_export_names(self, class_names: Sequence[str] | None) -> None:
        """Carry several class names into exports, each image scored with the one CLIP picks; ``None`` for one.

        Raises:
            ValueError: No name, a name given twice, or a name the prompts cannot use.
            TypeError: A single string, or a name that is not a string.
        """
        if class_names is None:
            self.export_names = None
            return
        candidates = check_candidates(class_names)
        for name in candidates:
            self._check(name)
        self.export_names = candidates

    @staticmethod
    def save(checkpoint: dict[str, Any], run_name: str) -> None:
        """Keep the class name the prompts used in a Lightning checkpoint (an export from it has no data module)."""
        checkpoint[CHECKPOINT_CLASS_NAME_KEY] = run_name

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Remember the class name a Lightning checkpoint's prompts used, for the runs that have no other."""
        self.checkpoint_name = checkpoint.get(CHECKPOINT_CLASS_NAME_KEY)
