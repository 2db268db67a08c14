"""The configuration files shipped with the package, and ``--config`` values that name one.

The repository's ``configs/`` folder is installed as package data (``anomalib_adaclip/configs/``), so an installed
package has every example configuration. A ``--config`` value that is not an existing file may name one of them:
``paper_full``, ``paper_full.yaml``, ``benchmark/paper_full.yaml`` or ``configs/benchmark/paper_full.yaml`` (the
repository path, so the README's commands work from any folder). A bare name is looked up first in the folder of the
command (``benchmark/`` for ``benchmark``, ``train/`` for ``train``, the top level for anomalib's commands), then
anywhere, where it must be unique. A value that is neither is refused with the list of shipped names.

Example:
    >>> from anomalib_adaclip.config_files import resolve_config
    >>> resolve_config("paper_full", "benchmark").name
    'paper_full.yaml'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = [
    "CONFIG_DIR",
    "ConfigKind",
    "UnknownConfigError",
    "resolve_config",
    "resolve_config_arguments",
    "shipped_configs",
]

#: The shipped configurations (installed, the package data; in a checkout, the link anomalib_adaclip/configs ->
#: ../configs).
CONFIG_DIR = Path(str(files("anomalib_adaclip") / "configs"))

ConfigKind = Literal["anomalib", "benchmark", "train"]
_FOLDERS: dict[str, str] = {"anomalib": "", "benchmark": "benchmark", "train": "train"}
_SUFFIXES = (".yaml", ".yml")


class UnknownConfigError(FileNotFoundError):
    """A ``--config`` value that is neither an existing file nor the name of a shipped configuration."""


def shipped_configs() -> list[str]:
    """The shipped configuration files, as paths relative to :data:`CONFIG_DIR` (``benchmark/paper_full.yaml``)."""
    if not CONFIG_DIR.is_dir():
        return []
    return sorted(path.relative_to(CONFIG_DIR).as_posix() for path in CONFIG_DIR.rglob("*") if path.suffix in _SUFFIXES)


def _with_suffix(name: str) -> list[str]:
    return [name] if name.endswith(_SUFFIXES) else [name + suffix for suffix in _SUFFIXES]


def resolve_config(value: str | Path, kind: ConfigKind = "anomalib") -> Path:
    """The file a ``--config`` value means: the file itself if it exists, else the shipped configuration it names.

    Args:
        value: A path, or a shipped configuration's name (see the module description).
        kind: The command's kind, whose folder a bare name is looked up in first.

    Returns:
        The path of the file.

    Raises:
        UnknownConfigError: Neither a file nor a shipped name (the message lists the shipped names), or a bare name
            shipped in several folders.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = str(value).replace("\\", "/").removeprefix("./").removeprefix("configs/")
    if "/" in name:
        matches = [relative for relative in _with_suffix(name) if relative in shipped]
    else:
        folder = _FOLDERS[kind]
        preferred = [f"{folder}/{candidate}" if folder else candidate for candidate in _with_suffix(name)]
        matches = [relative for relative in preferred if relative in shipped]
        if not matches:
            matches = [relative for relative in shipped if relative.rsplit("/", 1)[-1] in _with_suffix(name)]
    if len(matches) == 1:
        return CONFIG_DIR / matches[0]
    if matches:
        msg = f"--config {value}: several shipped configurations have this name: {', '.join(matches)}; give one."
        raise UnknownConfigError(msg)
    listed = ", ".join(shipped) if shipped else f"none (no folder {CONFIG_DIR})"
    msg = (
        f"--config {value}: {path} does not exist, and no configuration of that name ships with anomalib-adaclip. "
        f"Shipped configurations (give the name, e.g. 'paper_full' or 'benchmark/paper_full.yaml'): {listed}."
    )
    raise UnknownConfigError(msg)


def resolve_config_arguments(arguments: list[str], kind: ConfigKind = "anomalib") -> list[str]:
    """``arguments`` with the value of every ``--config`` / ``-c`` option resolved by :func:`resolve_config`.

    Values that are configuration text rather than a file name (jsonargparse's inline YAML or JSON) are kept.

    Raises:
        UnknownConfigError: A value names no file and no shipped configuration.
    """
    resolved = list(arguments)
    for index, argument in enumerate(arguments):
        if argument.startswith("--config="):
            value = argument.split("=", 1)[1]
            if not _inline(value):
                resolved[index] = f"--config={resolve_config(value, kind)}"
        elif argument in {"--config", "-c"} and index + 1 < len(arguments) and not _inline(arguments[index + 1]):
            resolved[index + 1] = str(resolve_config(arguments[index + 1], kind))
    return resolved


def _inline(value: str) -> bool:
    """Whether a ``--config`` value is configuration text (jsonargparse accepts YAML or JSON in place of a file)."""
    return any(marker in value for marker in ("\n", "{", "[", ": "))
