"""Helpers that several test modules share: model and Engine factories, subprocess runs, generated data, entries.

A test module imports shared helpers from here or from ``tests/conftest.py`` (fixtures, backbones, reference files),
never from another test module: a test module is a leaf. Heavy optional imports (onnxruntime) stay inside the helper
that needs them, so that importing this module costs no more than the test modules already pay.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import maximum_filter

from anomalib_adaclip.benchmark.config import BenchmarkConfig, BenchmarkConfigError, load_config
from anomalib_adaclip.config import (
    ClassConfig,
    FewShotConfig,
    MutualGroupConfig,
    PromptConfig,
    RarityGroupConfig,
    ThresholdConfig,
    TilingConfig,
)
from anomalib_adaclip.line import LineScore
from tests.conftest import MICRO_BACKBONE, PROJECT_ROOT, TIRE_ROOT

if TYPE_CHECKING:
    from anomalib.engine import Engine

    from anomalib_adaclip import AdaCLIP, AdaCLIPModel

__all__ = [
    "BIN",
    "EXPORT_MAP_ATOL",
    "EXPORT_SCORE_ATOL",
    "IMAGE_SIZE",
    "LOCK_HOLDER_SCRIPT",
    "OWN_PROMPTS",
    "OWN_SENTENCES",
    "RUN_DIR",
    "SETTINGS_GROUPS",
    "SPEED_RESULT_FIELDS",
    "PatchMemoryScorer",
    "adaclip_entry",
    "assert_onnx_matches_torch",
    "clip_normalised",
    "console_script",
    "explain",
    "folder_entry",
    "full_context_text_embeddings",
    "hold_lock",
    "make_adaclip",
    "make_engine",
    "make_folder_dataset",
    "painted_tire_defects",
    "paper_dataset",
    "predict_arguments",
    "run",
    "shrink_images",
    "subprocess_environment",
    "table_paths",
    "tiny_flags",
    "tire_good_images",
    "with_overrides",
    "write_part_images",
    "write_png",
]

# AdaCLIP's settings groups, argument -> dataclass, in the constructor's order: the truth the constructor's and the
# parameters page's tests compare with (written out, not read from the code they test).
SETTINGS_GROUPS = {
    "prompts": PromptConfig,
    "few_shot": FewShotConfig,
    "mutual": MutualGroupConfig,
    "tiling": TilingConfig,
    "classes": ClassConfig,
    "thresholds": ThresholdConfig,
    "rarity": RarityGroupConfig,
}

# The input size of MICRO_BACKBONE: every Engine run of the suite uses it.
IMAGE_SIZE = 112
BIN = Path(sys.executable).parent

# The keys of one measurement of the speed benchmark (``benchmark.speed.measure.measure``'s documented return value).
SPEED_RESULT_FIELDS = frozenset(
    {
        "batch_size",
        "batches",
        "images",
        "seconds",
        "images_per_second",
        "seconds_per_image",
        "median_seconds_per_image",
        "cpu_seconds_per_image",
        "peak_memory_bytes",
        "peak_memory_per_image_bytes",
        "memory_kind",
    }
)

# Prompt settings other than the paper's, and the sentences they give for "metal-nut".
OWN_PROMPTS = {"normal_states": ["{}", "good {}"], "abnormal_states": ["bad {}"], "templates": ["a photo of a {}."]}
OWN_SENTENCES = (["a photo of a metal nut.", "a photo of a good metal nut."], ["a photo of a bad metal nut."])

# ----------------------------------------------------------------------------------------------------------------------
# Models and the Engine
# ----------------------------------------------------------------------------------------------------------------------


def make_adaclip(weights: Path | str, *, seed: int | None = 0, **overrides: Any) -> AdaCLIP:
    """The Lightning model on the micro CLIP at ``weights`` (112 px), ``overrides`` win.

    Args:
        weights: The micro CLIP's weights file (the ``micro_weights`` fixture, or another file of that backbone).
        seed: Seeds torch before the build (the prompts and projections); ``None`` leaves the generator alone (for
            models whose trainable tensors all come from a checkpoint).
        **overrides: Any other ``AdaCLIP`` argument (``class_name``, ``checkpoint``, ``thresholding``, ...).
    """
    from anomalib_adaclip import AdaCLIP

    if seed is not None:
        torch.manual_seed(seed)
    arguments: dict[str, Any] = {"backbone": MICRO_BACKBONE, "backbone_weights": str(weights), "image_size": IMAGE_SIZE}
    arguments.update(overrides)
    return AdaCLIP(**arguments)


def demo_twin(weights: Path | str, checkpoint: str | None, **overrides: Any) -> AdaCLIP:
    """AdaCLIP as the demo builds it for class 'tire' on the micro CLIP (fixed thresholds): the model whose
    ``Engine.predict`` the demo's scores must equal. ``overrides``: the run's groups (``few_shot``, ``rarity``, ...)."""
    classes, thresholds = {"name": "tire"}, {"mode": "fixed"}
    return make_adaclip(weights, seed=None, checkpoint=checkpoint, classes=classes, thresholds=thresholds, **overrides)


def make_engine(root: Path, **kwargs: Any) -> Engine:
    """anomalib's Engine for the suite: CPU, one device, no logger, no progress bar, outputs under ``root``.

    Args:
        root: The Engine's ``default_root_dir``.
        **kwargs: Further Engine (Trainer) arguments, such as ``callbacks``.
    """
    from anomalib.engine import Engine

    return Engine(
        default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, **kwargs
    )


def clip_normalised(path: Path, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The pre-processing the issue specifies, written out: bicubic resize (no aspect ratio), CLIP mean/std."""
    from anomalib.data.utils import read_image
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from torchvision.transforms.v2 import functional as TF  # noqa: N812

    image = read_image(path, as_tensor=True)
    image = TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.normalize(image, mean=list(OPENAI_DATASET_MEAN), std=list(OPENAI_DATASET_STD)).unsqueeze(0)


def full_context_text_embeddings(model: AdaCLIPModel, names: list[str], prompts: torch.Tensor | None) -> torch.Tensor:
    """The reference's way: every sentence padded to 77 tokens through open_clip's own blocks, ``[G, S, embed]``."""
    from open_clip.tokenizer import SimpleTokenizer
    from torch.nn import functional as F  # noqa: N812

    clip = model.clip
    tokenizer = SimpleTokenizer()
    embeddings = []
    for group, name in enumerate(names):
        normal, abnormal = model.ensemble.sentences(name)
        tokens = tokenizer(normal + abnormal)
        x = clip.token_embedding(tokens) + clip.positional_embedding
        for index, block in enumerate(clip.transformer.resblocks):
            if prompts is not None and 1 <= index < model.prompting_depth:
                block_prompts = prompts[index, group if prompts.shape[1] > 1 else 0]
                length = block_prompts.shape[0]
                x = torch.cat([x[:, :1], block_prompts.expand(len(tokens), -1, -1), x[:, 1 + length :]], dim=1)
            x = block(x, attn_mask=clip.attn_mask)
        pooled = clip.ln_final(x[torch.arange(len(tokens)), tokens.argmax(-1)]) @ clip.text_projection
        embeddings.append(F.normalize(pooled, dim=-1))
    return torch.stack(embeddings)


# ----------------------------------------------------------------------------------------------------------------------
# Exports
# ----------------------------------------------------------------------------------------------------------------------

# onnxruntime and torch agree on the probabilities within these (image score, anomaly map).
EXPORT_SCORE_ATOL = 1e-5
EXPORT_MAP_ATOL = 1e-4


def _export_inputs() -> list[torch.Tensor]:
    """A real, non-square image (when the tire sample is there), and a batch of three of another size."""
    from anomalib.data.utils import read_image

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 3, 150, 130, generator=generator)]
    image_path = TIRE_ROOT / "tire" / "test" / "cut" / "000.png"
    if image_path.is_file():
        inputs.insert(0, read_image(image_path, as_tensor=True).unsqueeze(0))
    return inputs


def assert_onnx_matches_torch(onnx_path: Path, model: AdaCLIP) -> dict[str, float]:
    """Run the ONNX export and the torch model on the same raw images; return the largest score and map deviations."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [value.name for value in session.get_inputs()] == ["input"]
    names = [value.name for value in session.get_outputs()]
    assert names == ["pred_score", "pred_label", "anomaly_map", "pred_mask"]
    post = model.post_processor
    deviations = {"pred_score": 0.0, "anomaly_map": 0.0}
    model.eval()
    for images in _export_inputs():
        with torch.no_grad():
            expected = model(images)
        outputs = dict(zip(names, session.run(None, {"input": images.numpy()}), strict=True))
        assert outputs["pred_score"].shape == (images.shape[0],)
        assert outputs["anomaly_map"].shape == (images.shape[0], model.model.image_size, model.model.image_size)
        for name, atol in (("pred_score", EXPORT_SCORE_ATOL), ("anomaly_map", EXPORT_MAP_ATOL)):
            got = torch.from_numpy(outputs[name])
            torch.testing.assert_close(got, getattr(expected, name), rtol=0, atol=atol)
            deviations[name] = max(deviations[name], float((got - getattr(expected, name)).abs().max()))
        for decision, value, threshold, atol in (
            ("pred_label", expected.pred_score, post.normalized_image_threshold, EXPORT_SCORE_ATOL),
            ("pred_mask", expected.anomaly_map, post.normalized_pixel_threshold, EXPORT_MAP_ATOL),
        ):
            clear = (value - threshold).abs() > atol
            got = torch.from_numpy(outputs[decision])
            assert torch.equal(got[clear], getattr(expected, decision)[clear]), decision
    return deviations


# ----------------------------------------------------------------------------------------------------------------------
# Commands in subprocesses
# ----------------------------------------------------------------------------------------------------------------------


def subprocess_environment(**extra: str) -> dict[str, str]:
    """This process's environment with this checkout first on the path and the Hugging Face hub offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return env


LOCK_HOLDER_SCRIPT = "hold_lock.py"
_LOCK_HOLDER = """
import sys, time
from anomalib_adaclip.locks import OwnedLock
with OwnedLock(sys.argv[1], what="the output"):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_lock(lock: Path, folder: Path) -> subprocess.Popen:
    """Another process that holds the :class:`~anomalib_adaclip.locks.OwnedLock` ``lock`` until it is killed.

    It runs the script ``<folder>/hold_lock.py``, so its recorded command line is ``hold_lock.py <lock>``. Returns
    once the lock is held; the caller kills the process (``SIGKILL``: its lock is then free at once).
    """
    script = folder / LOCK_HOLDER_SCRIPT
    script.write_text(_LOCK_HOLDER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(lock)], stdout=subprocess.PIPE, text=True, env=subprocess_environment()
    )
    assert process.stdout is not None
    if process.stdout.readline() != "held\n":
        process.kill()
        pytest.fail(f"the lock holder did not take {lock}")
    return process


def console_script(name: str) -> list[str]:
    """The installed console script (``pip install -e .`` puts it next to the interpreter)."""
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"console script {name!r} is not installed next to {sys.executable}: run `pip install -e .`")
    return [str(path)]


def run(command: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    """Run a command with this checkout first on the path, offline for the Hugging Face hub."""
    env = subprocess_environment(**environment)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


def explain(result: subprocess.CompletedProcess) -> str:
    """A failed command's exit code and the tails of its output, for an assertion message."""
    tail = f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    return f"exit code {result.returncode}\n{tail}"


def tiny_flags(weights: Path) -> list[str]:
    """The CLI flags of the micro CLIP at ``weights`` (112 px)."""
    return [
        *("--model.backbone", json.dumps(MICRO_BACKBONE)),
        *("--model.backbone_weights", str(weights)),
        *("--model.image_size", str(IMAGE_SIZE)),
    ]


def predict_arguments(weights: Path, data: Path, root: Path) -> list[str]:
    """``predict`` with the cheapest model (micro CLIP, static prompts, no HSF) on CPU, outputs under ``root``."""
    return [
        "predict",
        *("--model", "AdaCLIP"),
        *tiny_flags(weights),
        *("--model.prompts.type", "S"),
        *("--model.prompts.use_hsf", "false"),
        *("--data", str(data)),
        *("--trainer.accelerator", "cpu"),
        *("--trainer.enable_progress_bar", "false"),
        *("--default_root_dir", str(root)),
    ]


# The results folder of an ``anomalib-adaclip predict`` run under its ``--default_root_dir``.
RUN_DIR = Path("AdaCLIP") / "latest"


def table_paths(table: Path) -> list[str]:
    """The absolute image paths of a predictions table's complete rows (those with their line end), in order."""
    from anomalib_adaclip.components.prediction_table import CSV_COLUMNS

    text = table.read_text(encoding="utf-8")
    reader = csv.reader(text[: text.rfind("\n") + 1].splitlines())
    assert tuple(next(reader)) == CSV_COLUMNS
    return [os.path.abspath(row[0]) for row in reader]


# ----------------------------------------------------------------------------------------------------------------------
# Generated files
# ----------------------------------------------------------------------------------------------------------------------


def write_png(path: Path, array: np.ndarray) -> None:
    """Save ``array`` (uint8, HxW or HxWx3) as a PNG, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_part_images(folder: Path, count: int, seed: int = 0) -> set[str]:
    """``count`` random 32x32 RGB PNGs ``part_NNNNN.png``; returns their absolute paths (the tables' truth)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"part_{index:05d}.png")
    return {os.path.abspath(folder / f"part_{index:05d}.png") for index in range(count)}


def make_folder_dataset(root: Path, n_good: int = 3, n_bad: int = 3, size: int = 32, seed: int = 0) -> Path:
    """A Folder data set: ``good/`` normal images, ``bad/`` images with a bright square, ``masks/<stem>_mask.png``.

    Every image is a constant colour (image i of a folder has grey value 10 + 20 * i, bad images 130 + 20 * i), so
    mosaic tiles can be recognised; the square of bad image i is at a different place for each image.
    """
    rng = np.random.default_rng(seed)
    for index in range(n_good):
        write_png(root / "good" / f"{index:03d}.png", np.full((size, size, 3), 10 + 20 * index, dtype=np.uint8))
    for index in range(n_bad):
        image = np.full((size, size, 3), 130 + 20 * index, dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        top, left = rng.integers(0, size // 2, size=2)
        mask[top : top + size // 4, left : left + size // 4] = 255
        image[mask > 0] = 255
        write_png(root / "bad" / f"{index:03d}.png", image)
        write_png(root / "masks" / f"{index:03d}_mask.png", mask)
    return root


# ----------------------------------------------------------------------------------------------------------------------
# Benchmark configuration entries
# ----------------------------------------------------------------------------------------------------------------------


def folder_entry(**overrides: Any) -> dict[str, Any]:
    """A benchmark data set entry: anomalib's Folder over ``data/{category}``, two categories."""
    entry = {
        "class_path": "anomalib.data.Folder",
        "init_args": {"name": "parts", "root": "data/{category}", "normal_dir": "good", "abnormal_dir": "bad"},
        "categories": ["gear", "bracket"],
    }
    entry.update(overrides)
    return entry


def adaclip_entry(**overrides: Any) -> dict[str, Any]:
    """A benchmark model entry: AdaCLIP without weights."""
    entry = {"name": "AdaCLIP", "class_path": "anomalib_adaclip.AdaCLIP", "init_args": {"backbone_weights": None}}
    entry.update(overrides)
    return entry


def paper_dataset(name: str, categories: list[str]) -> dict[str, Any]:
    """A benchmark data set entry named like one of the paper's, a Folder over ``data/<name>/{category}``."""
    return {
        "name": name,
        "class_path": "anomalib.data.Folder",
        "init_args": {"name": name, "root": f"data/{name}/{{category}}", "normal_dir": "good", "abnormal_dir": "bad"},
        "categories": categories,
    }


# ----------------------------------------------------------------------------------------------------------------------
# A shipped benchmark configuration on local copies or tiny models
# ----------------------------------------------------------------------------------------------------------------------
def _keep_datasets(
    config: BenchmarkConfig, raw: dict[str, Any], datasets: Mapping[str, Sequence[str]]
) -> tuple[BenchmarkConfig, dict[str, Any]]:
    """``config`` and its ``raw`` cut to ``datasets`` (see :func:`with_overrides`)."""
    names = [spec.name for spec in config.data]
    unknown = [name for name in datasets if name not in names]
    if unknown:
        msg = f"{config.source}: overrides name unknown data {unknown}; the data are {names}."
        raise BenchmarkConfigError(msg)
    entries = []
    for entry, spec in zip(raw["data"], config.data, strict=True):
        if spec.name not in datasets:
            continue
        wanted = list(datasets[spec.name])
        missing = [category for category in wanted if category not in spec.categories]
        if missing:
            msg = f"{config.source}: data set {spec.name} has no categories {missing}; it has {list(spec.categories)}."
            raise BenchmarkConfigError(msg)
        entries.append({**entry, "name": spec.name, **({"categories": wanted} if wanted else {})})
    raw["data"] = entries
    for model in raw["models"]:
        by_dataset = model.get("init_args_by_dataset") or {}
        model["init_args_by_dataset"] = {name: value for name, value in by_dataset.items() if name in datasets}
    return load_config(raw, output=config.output), raw


def with_overrides(
    config: BenchmarkConfig,
    *,
    data_init_args: Mapping[str, Mapping[str, Any]] | None = None,
    model_init_args: Mapping[str, Mapping[str, Any]] | None = None,
    output: str | Path | None = None,
    datasets: Mapping[str, Sequence[str]] | None = None,
) -> BenchmarkConfig:
    """The same grid with some arguments replaced, checked again: e.g. a shipped config on local copies or tiny models.

    Args:
        config: A loaded configuration.
        data_init_args: Per data set name (``"*"``: every data set), arguments that replace those of its ``init_args``
            (``root``, ``num_workers``, ...).
        model_init_args: Per model name (``"*"``: every model), arguments that replace those of its ``init_args`` and
            of each of its ``init_args_by_dataset`` entries (the override wins on every data set).
        output: Output folder; defaults to the configuration's.
        datasets: Keep only these data sets (by name, in the configuration's order), each with the categories given
            (an empty list keeps all of its categories); ``init_args_by_dataset`` entries of the others are dropped.
            ``None`` keeps every data set.

    Returns:
        The new configuration (its ``source`` is kept; ``raw`` holds the overrides).

    Raises:
        BenchmarkConfigError: An override names an unknown data set, category or model, or does not fit the
            constructor.
    """
    raw = copy.deepcopy(config.raw)
    if datasets is not None:
        config, raw = _keep_datasets(config, raw, datasets)
    for key, overrides, entries in (
        ("data", data_init_args or {}, raw["data"]),
        ("models", model_init_args or {}, raw["models"]),
    ):
        names = {spec.name for spec in (config.data if key == "data" else config.models)}
        unknown = [name for name in overrides if name != "*" and name not in names]
        if unknown:
            msg = f"{config.source}: overrides name unknown {key} {unknown}; the {key} are {sorted(names)}."
            raise BenchmarkConfigError(msg)
        specs = config.data if key == "data" else config.models
        for entry, spec in zip(entries, specs, strict=True):
            arguments = {**overrides.get("*", {}), **overrides.get(spec.name, {})}
            if not arguments:
                continue
            entry["name"] = spec.name  # a default name (the class name) must not change with the arguments
            entry["init_args"] = {**(entry.get("init_args") or {}), **arguments}
            for dataset, by_dataset in (entry.get("init_args_by_dataset") or {}).items():
                entry["init_args_by_dataset"][dataset] = {**(by_dataset or {}), **arguments}
    loaded = load_config(raw, output=output if output is not None else config.output)
    return replace(loaded, source=config.source)


# The running line (anomalib_adaclip.line): a small deterministic scorer with a real bank, and the tire images
# ----------------------------------------------------------------------------------------------------------------------
class PatchMemoryScorer:
    """A stand-in for the rarity scorer, for the line's tests: a memory bank of raw pixel patches.

    An image's patches (``patch`` x ``patch`` pixels of the pre-processed image) are compared with every patch of the
    bank; the score is the largest distance of a patch to its nearest bank patch, so an image unlike what the bank
    has seen scores high, and one like it low. The bank is a tensor (with the size of each image's share), so a
    snapshot, a restore and a replay are checked bit for bit. It implements ``anomalib_adaclip.line.LineScorer``.

    Args:
        image_size: The input side.
        patch: The patch side.
        max_images: The bank keeps the patches of at most this many images (the oldest go first).
    """

    def __init__(self, image_size: int = 64, patch: int = 4, max_images: int = 64) -> None:
        self.image_size = image_size
        self.patch = patch
        self.max_images = max_images
        self.bank = torch.zeros(0, 3 * patch * patch)
        self.sizes = torch.zeros(0, dtype=torch.long)

    def score(self, image: torch.Tensor, class_name: str) -> Any:
        del class_name
        features = torch.nn.functional.unfold(image, self.patch, stride=self.patch)[0].T.contiguous()
        if len(self.bank) == 0:
            distances = torch.zeros(len(features))
        else:
            distances = torch.cdist(features, self.bank).min(1).values
        side = self.image_size // self.patch
        return LineScore(float(distances.max()), distances.reshape(side, side), features)

    def admit(self, pending: torch.Tensor) -> None:
        self.bank = torch.cat([self.bank, pending])
        self.sizes = torch.cat([self.sizes, torch.tensor([len(pending)])])
        if len(self.sizes) > self.max_images:
            self.bank = self.bank[int(self.sizes[0]) :]
            self.sizes = self.sizes[1:]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.clone(), "sizes": self.sizes.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank = state["bank"].clone()
        self.sizes = state["sizes"].clone()


def tire_good_images() -> list[Path]:
    """The 10 good tire images: the 4 of the training split, then the 6 of the test split."""
    tire = TIRE_ROOT / "tire"
    return sorted((tire / "train" / "good").glob("*.png")) + sorted((tire / "test" / "good").glob("*.png"))


def painted_tire_defects(folder: Path) -> list[Path]:
    """The 9 defective tire images with their defects painted red, as PNG files in ``folder`` (returned in order).

    The real defects are a fraction of a percent of the image: the region of each ground-truth mask, widened by 20
    pixels, is painted pure red, so that :class:`PatchMemoryScorer` sees it as the rarity scorer sees the real one.
    """
    tire = TIRE_ROOT / "tire"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in ("contamination", "cut", "hole"):
        for image_path in sorted((tire / "test" / kind).glob("*.png")):
            mask_path = tire / "ground_truth" / kind / f"{image_path.stem}_mask.png"
            with Image.open(mask_path) as mask:
                region = maximum_filter(np.asarray(mask.convert("L")) > 0, size=41)
            with Image.open(image_path) as image:
                pixels = np.asarray(image.convert("RGB")).copy()
            pixels[region] = (255, 0, 0)
            target = folder / f"{kind}_{image_path.name}"
            Image.fromarray(pixels).save(target)
            written.append(target)
    return written


def shrink_images(paths: list[Path], folder: Path, width: int = 200) -> list[Path]:
    """Copies of ``paths`` in ``folder``, ``width`` pixels wide (same aspect ratio, PNG): quick to read and resize."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            height = round(image.height * width / image.width)
            target = folder / f"{index:03d}_{path.name}"
            image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(target)
        copies.append(target)
    return copies
