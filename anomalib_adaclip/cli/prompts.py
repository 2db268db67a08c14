"""``anomalib-adaclip prompts``: the exact sentences AdaCLIP's prompts use, without building the model.

``anomalib-adaclip prompts --class-name metal-nut [--config cfg.yaml] [--model.normal_states ...]`` prints them;
``--image PATH`` shows which class name an image gets from ``class_name_map`` / ``class_name_from_parent``.
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


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip prompts`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip prompts",
        description="Print the sentences AdaCLIP's prompts use for a class name (nothing is built or downloaded).",
    )
    parser.add_argument("--class-name", action="append", default=[], help="class name (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="show the class name this image gets (repeatable)")
    parser.add_argument("-c", "--config", type=Path, default=None, help="anomalib config file with an AdaCLIP model")
    for key in (*PROMPT_KEYS, "class_name", "class_name_map", "class_name_from_parent", "checkpoint"):
        parser.add_argument(f"--model.{key}", dest=f"model_{key}", default=None, help=f"AdaCLIP's {key} (YAML/JSON)")
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


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip prompts``; returns the exit code."""
    options = build_parser().parse_args(arguments)
    try:
        settings = _model_arguments(options.config)
        for key in (*PROMPT_KEYS, "class_name", "class_name_map", "class_name_from_parent", "checkpoint"):
            value = getattr(options, f"model_{key}")
            if value is not None:
                settings[key] = value if key in {"class_name", "checkpoint"} else yaml.safe_load(value)
        config = AdaCLIPConfig(**{key: settings[key] for key in PROMPT_KEYS if settings.get(key)})
        PromptEnsemble.of(config)  # checks the phrases (ValueError names the argument)
        rules = ClassNameRules(settings.get("class_name_map") or {}, bool(settings.get("class_name_from_parent")))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_name = str(settings.get("class_name") or DEFAULT_CLASS_NAME)
    names = list(options.class_name)
    for image in options.image:
        match = rules.match(image)
        name, rule = match if match else (run_name, "no rule matches: the run's class name")
        print(f"{image} -> class name {name!r} ({rule})")
        names.append(name)
    if not names:
        names = [run_name]
    if not config.uses_paper_prompts and settings.get("checkpoint"):
        print(
            "warning: the released checkpoints were trained with the paper's prompts; own sentences may not fit "
            "their learned prompts.",
            file=sys.stderr,
        )
    for name in dict.fromkeys(names):
        print(sentences_text(config, name))
    return 0
