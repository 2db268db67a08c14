"""``anomalib-adaclip prompts``: the exact sentences AdaCLIP's prompts use, without building the model.

``anomalib-adaclip prompts --class-name metal-nut [--config cfg.yaml] [--model.prompts.normal_states ...]`` prints
them; ``--image PATH`` shows which class name an image gets from ``classes.map`` / ``classes.from_parent``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from anomalib_adaclip.components.class_names import ClassNameRules
from anomalib_adaclip.config import DEFAULT_CLASS_NAME, AdaCLIPConfig
from anomalib_adaclip.model.prompting import PromptEnsemble, sentences_text

__all__ = ["build_parser", "main"]

PROMPT_KEYS = ("normal_states", "abnormal_states", "templates")
# The settings it reads, as (group, setting) of AdaCLIP's arguments (``None``: a top-level argument).
SETTINGS: tuple[tuple[str | None, str], ...] = (
    *(("prompts", key) for key in PROMPT_KEYS),
    ("classes", "name"),
    ("classes", "map"),
    ("classes", "from_parent"),
    (None, "checkpoint"),
)


def _flag(group: str | None, key: str) -> str:
    return f"{group}.{key}" if group else key


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip prompts`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip prompts",
        description="Print the sentences AdaCLIP's prompts use for a class name (nothing is built or downloaded).",
    )
    parser.add_argument("--class-name", action="append", default=[], help="class name (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="show the class name this image gets (repeatable)")
    parser.add_argument("-c", "--config", type=Path, default=None, help="anomalib config file with an AdaCLIP model")
    for group, key in SETTINGS:
        name = _flag(group, key)
        parser.add_argument(f"--model.{name}", dest=f"model_{name}", default=None, help=f"AdaCLIP's {name} (YAML/JSON)")
    return parser


def _model_arguments(config_path: Path | None) -> dict[str, Any]:
    """The AdaCLIP init arguments of an anomalib config file (``model.init_args``), or of none."""
    if config_path is None:
        return {}
    if not config_path.is_file():
        msg = f"Config file not found: {config_path}"
        raise FileNotFoundError(msg)
    content = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    model = content.get("model", {}) if isinstance(content, Mapping) else {}
    if isinstance(model, Mapping) and "init_args" in model:
        model = model["init_args"] or {}
    if not isinstance(model, Mapping):
        msg = f"{config_path} has no `model` mapping with AdaCLIP's arguments."
        raise ValueError(msg)
    return dict(model)


def _setting(arguments: Mapping[str, Any], group: str | None, key: str) -> Any:
    """One setting of AdaCLIP's init arguments (in its group), ``None`` where it is not given."""
    if group is None:
        return arguments.get(key)
    values = arguments.get(group)
    return values.get(key) if isinstance(values, Mapping) else None


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip prompts``; returns the exit code."""
    options = build_parser().parse_args(arguments)
    try:
        arguments = _model_arguments(options.config)
        settings = {_flag(group, key): _setting(arguments, group, key) for group, key in SETTINGS}
        for name in settings:
            value = getattr(options, f"model_{name}")
            if value is not None:
                settings[name] = value if name in {"classes.name", "checkpoint"} else yaml.safe_load(value)
        config = AdaCLIPConfig(**{key: settings[f"prompts.{key}"] for key in PROMPT_KEYS if settings[f"prompts.{key}"]})
        PromptEnsemble.of(config)  # checks the phrases (ValueError names the argument)
        rules = ClassNameRules(settings["classes.map"] or {}, bool(settings["classes.from_parent"]))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_name = str(settings["classes.name"] or DEFAULT_CLASS_NAME)
    names = list(options.class_name)
    for image in options.image:
        match = rules.match(image)
        name, rule = match if match else (run_name, "no rule matches: the run's class name")
        print(f"{image} -> class name {name!r} ({rule})")
        names.append(name)
    if not names:
        names = [run_name]
    if not config.uses_paper_prompts and settings["checkpoint"]:
        print(
            "warning: the released checkpoints were trained with the paper's prompts; own sentences may not fit "
            "their learned prompts.",
            file=sys.stderr,
        )
    for name in dict.fromkeys(names):
        print(sentences_text(config, name))
    return 0
