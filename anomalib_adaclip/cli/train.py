"""``anomalib-adaclip train --config configs/train/<name>.yaml``: train AdaCLIP's prompts from a configuration.

The parser (jsonargparse) has the sections ``model`` (:class:`~anomalib_adaclip.AdaCLIP`), ``data``
(:class:`~anomalib_adaclip.data.auxiliary.AuxiliaryDataModule`), ``optimizer``, ``checkpointing`` and ``trainer``; the
run itself is :func:`~anomalib_adaclip.training.train.train`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer, seed_everything

from anomalib_adaclip import AdaCLIP
from anomalib_adaclip.config import OptimizerSettings
from anomalib_adaclip.data import AuxiliaryDataModule
from anomalib_adaclip.training import DEFAULT_VAL_METRICS, CheckpointSettings, resume_dir, train

__all__ = ["build_parser", "main"]

_COMPONENT_ARGUMENTS = {"pre_processor", "post_processor", "evaluator", "visualizer"}
_TRAINER_SKIP = {"callbacks", "default_root_dir", "enable_checkpointing", "logger", "plugins"}


def build_parser() -> Any:
    """The ``anomalib-adaclip train`` parser (jsonargparse): sections model, data, optimizer, checkpointing, trainer."""
    from jsonargparse import ActionConfigFile, ArgumentParser  # noqa: PLC0415

    parser = ArgumentParser(
        prog="anomalib-adaclip train",
        description=(
            "Train AdaCLIP's prompts, prompt generators and projections on auxiliary annotated data (the test splits "
            "of anomalib data sets) with Lightning; the CLIP stays frozen. Results go to a new versioned folder "
            "<results_dir>/AdaCLIP/training/<name>/v<N>."
        ),
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML configuration (see configs/train/).")
    parser.add_argument("--name", type=str, default="adaclip", help="Run name (folder under AdaCLIP/training).")
    parser.add_argument("--results_dir", type=str, default="results", help="Root folder of the results.")
    parser.add_argument("--seed", type=int | None, default=111, help="Seed of initialisation, data order, mosaic.")
    parser.add_argument(
        "--resume",
        type=str | None,
        default=None,
        help="Continue the run in this folder (…/v<N> or …/latest) from its last checkpoint, with its config.yaml.",
    )
    parser.add_argument(
        "--val_metrics",
        type=list[str],
        default=list(DEFAULT_VAL_METRICS),
        help="Validation metrics: <image|pixel>_<AUROC|AUPR|F1Max|AUPRO>.",
    )
    parser.add_class_arguments(AdaCLIP, "model", skip=_COMPONENT_ARGUMENTS)
    parser.add_class_arguments(AuxiliaryDataModule, "data")
    parser.add_class_arguments(OptimizerSettings, "optimizer")
    parser.add_class_arguments(CheckpointSettings, "checkpointing")
    parser.add_class_arguments(Trainer, "trainer", skip=_TRAINER_SKIP, instantiate=False, fail_untyped=False)
    parser.set_defaults({"trainer.max_epochs": 5})
    return parser


def _option_value(argv: Sequence[str], option: str) -> str | None:
    for index, argument in enumerate(argv):
        if argument == option and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith(option + "="):
            return argument.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``anomalib-adaclip train``: parse the configuration, build model and data, train, report the outputs.

    Args:
        argv: Arguments after ``train``. Defaults to ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    resume = _option_value(argv, "--resume")
    if resume is not None:
        if _option_value(argv, "--config") is not None:
            parser.error("--resume uses the run's own config.yaml; give overrides as options, not another --config.")
        try:
            run_dir = resume_dir(resume)
        except FileNotFoundError as error:
            parser.error(str(error))
        argv = ["--config", str(run_dir / "config.yaml"), *argv]
    config = parser.parse_args(argv)
    if config.seed is not None:
        seed_everything(config.seed, workers=True)  # before the model: its prompts start from a seeded draw
    objects = parser.instantiate_classes(config)
    result = train(
        objects.model,
        objects.data,
        results_dir=config.results_dir,
        name=config.name,
        seed=config.seed,
        optimizer=objects.optimizer,
        checkpointing=objects.checkpointing,
        val_metrics=config.val_metrics,
        trainer_arguments=config.trainer.as_dict(),
        resume=config.resume,
        config=parser.dump(config, skip_none=False),
    )
    if result.checkpoint is not None:
        print(f"Run folder:            {result.run_dir}")
        print(f"AdaCLIP checkpoint:    {result.checkpoint}")
        print(f"Released layout:       {result.released_checkpoint}")
        print(f"From Lightning ckpt:   {result.lightning_checkpoint}")
        for key, value in sorted(result.metrics.items()):
            print(f"  {key}: {value:.6g}")
    return 0
