"""Class names per image: one run over many object types, each image prompted with its own name.

AdaCLIP's prompts name the object ("a bad photo of a damaged screw."). The run has one class name
(:func:`run_class_name`: the ``class_name`` argument, else the data module's category, else the name a loaded
checkpoint stored, else ``"object"``). A folder of mixed products needs a name per image: :class:`ClassNameRules`
derives it from the image path, and :class:`BatchClassNames` applies the rules to each batch:

1. ``class_name_map``: entries are tried in their order and the first that matches wins. A key with a glob
   character (``*``, ``?``, ``[``) is a pattern matched against the image path with :func:`fnmatch.fnmatchcase`
   (case-sensitive; ``*`` also matches ``/``); a relative pattern may match the end of the path, so
   ``"screws/*.png"`` matches ``/data/screws/a.png``. Any other key is a folder name (or a few folders,
   ``"line1/screws"``) that must appear, whole, among the image's parent folders.
2. ``from_parent``: the name of the image's parent folder.
3. No match: ``None``, and the caller uses the run's class name.

Example:
    >>> from anomalib_adaclip.components.class_names import ClassNameRules
    >>> rules = ClassNameRules({"*/bolt_*.png": "bolt", "nuts": "metal-nut"}, from_parent=True)
    >>> rules.match("/data/line1/bolt_003.png")
    ('bolt', "pattern '*/bolt_*.png' of class_name_map")
    >>> rules.match("/data/nuts/top/004.png")
    ('metal-nut', "folder 'nuts' of class_name_map")
    >>> rules.match("/data/washer/005.png")
    ('washer', 'the parent folder')
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import PurePath
from typing import Any, Protocol, runtime_checkable

from anomalib_adaclip.config import DEFAULT_CLASS_NAME
from anomalib_adaclip.model.class_choice import check_candidates
from anomalib_adaclip.model.prompting import format_class_name

from .attached import attached_datamodule

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_CLASS_NAME_KEY",
    "BatchClassNames",
    "ClassNameRules",
    "ClassNamedModule",
    "ClassNamedPrompts",
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
                msg = f"class_name_map keys must be glob patterns or folder names, got {key!r}."
                raise ValueError(msg)
            if not isinstance(name, str) or not name.strip():
                msg = f"class_name_map[{key!r}] must be a non-empty class name, got {name!r}."
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
                    return name, f"pattern {key!r} of class_name_map"
            elif f"/{key.strip('/')}/" in parents:
                return name, f"folder {key!r} of class_name_map"
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
        return argument, "the class_name argument"
    category = getattr(datamodule, "category", None)
    if isinstance(category, str) and category.strip():
        return category, f"the category of the data module {type(datamodule).__name__}"
    if checkpoint_name:
        return checkpoint_name, "the loaded checkpoint"
    return DEFAULT_CLASS_NAME, "the default: no class_name argument and no data module category"


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
                "class_name_map/class_name_from_parent need image paths, but the batches carry none: every image uses "
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
                    "No class_name_map rule matches %s: it and every other unmatched image use the run's class name "
                    "%r.",
                    path,
                    name,
                )
            names.append(name)
        return names


class ClassNamedPrompts:
    """Mixin of AdaCLIP's Lightning module: its prompts' class name per run, per image, in exports and checkpoints.

    The host sets ``model`` (an :class:`~anomalib_adaclip.model.AdaCLIPModel`), ``class_name`` (the argument),
    ``per_image_class_names`` (a :class:`BatchClassNames`), ``export_class_names`` and ``_checkpoint_class_name`` (the
    name a loaded checkpoint stored, ``None`` before). The run's class name is logged under the host's module.
    """

    def apply_class_name(self, datamodule: Any) -> None:
        """Choose the class name of the prompts for a run with ``datamodule`` (:func:`run_class_name`) and log it."""
        name, source = run_class_name(self.class_name, datamodule, self._checkpoint_class_name)
        self.model.check_class_name(name)
        self.model.class_name = name
        self.per_image_class_names.new_run()
        logging.getLogger(type(self).__module__).info(
            "AdaCLIP prompts use the class name %r (prompt text %r), from %s.", name, format_class_name(name), source
        )

    def image_class_names(self, batch: Any) -> list[str]:
        """The class name of every image of a batch: its own where a rule gives one, else the run's."""
        names = self.per_image_class_names.of(batch, self.model.class_name)
        return list(names) if names is not None else [self.model.class_name] * len(batch)

    def set_export_class_names(self, class_names: Sequence[str] | None) -> None:
        """Carry several class names into exports, each image scored with the one CLIP picks; ``None`` for one.

        Raises:
            ValueError: No name, a name given twice, or a name the prompts cannot use.
            TypeError: A single string, or a name that is not a string.
        """
        if class_names is None:
            self.export_class_names = None
            return
        candidates = check_candidates(class_names)
        for name in candidates:
            self.model.check_class_name(name)
        self.export_class_names = candidates

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the class name the prompts used with the trainable tensors (an export from it has no data module)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_CLASS_NAME_KEY] = self.model.class_name

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the class name the checkpoint's prompts used, for this run and the next."""
        super().on_load_checkpoint(checkpoint)
        self._checkpoint_class_name = checkpoint.get(CHECKPOINT_CLASS_NAME_KEY)
        self.apply_class_name(attached_datamodule(self))
