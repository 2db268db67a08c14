"""Class names per image: one run over many object types, each image prompted with its own name.

AdaCLIP's prompts name the object ("a bad photo of a damaged screw."). A folder of mixed products needs a name per
image. :class:`ClassNameRules` derives it from the image path:

1. ``class_name_map``: entries are tried in their order and the first that matches wins. A key with a glob
   character (``*``, ``?``, ``[``) is a pattern matched against the image path with :func:`fnmatch.fnmatchcase`
   (case-sensitive; ``*`` also matches ``/``); a relative pattern may match the end of the path, so
   ``"screws/*.png"`` matches ``/data/screws/a.png``. Any other key is a folder name (or a few folders,
   ``"line1/screws"``) that must appear, whole, among the image's parent folders.
2. ``from_parent``: the name of the image's parent folder.
3. No match: ``None``, and the caller uses the run's class name.

Example:
    >>> from anomalib_adaclip.class_names import ClassNameRules
    >>> rules = ClassNameRules({"*/bolt_*.png": "bolt", "nuts": "metal-nut"}, from_parent=True)
    >>> rules.match("/data/line1/bolt_003.png")
    ('bolt', "pattern '*/bolt_*.png' of class_name_map")
    >>> rules.match("/data/nuts/top/004.png")
    ('metal-nut', "folder 'nuts' of class_name_map")
    >>> rules.match("/data/washer/005.png")
    ('washer', 'the parent folder')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import PurePath

__all__ = ["ClassNameRules"]

GLOB_CHARACTERS = frozenset("*?[")


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
