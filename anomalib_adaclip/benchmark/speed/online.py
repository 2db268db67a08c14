r"""The speed benchmark's online mode (``--online-banks``, ``--online-memory-images``): RareCLIP's rarity scoring.

A running line pays, per image, one plain CLIP pass and one rarity step (:meth:`RarityScoring.step_tokens
<anomalib_adaclip.model.rarity.RarityScoring.step_tokens>`: the image scored against the bank, then admitted, with the
sequential coreset sampling that thins the bank). This mode times both side by side, one run of each in turn (a change
of the machine's load falls on all alike), for banks that hold ``N`` earlier images, and follows the memory over a long
run.

**Banks of N images without N CLIP passes.** A rarity step costs what the shapes of the bank make it cost, not its
values. :func:`synthetic_bank` builds the bank ``N`` steps leave, with random values of those exact shapes (what
:func:`bank_shapes` lists; the tests check it against real steps):

- per ``r`` (1, 3) and rarity layer, ``min(N * h*w, int(keep_ftime * h*w))`` unit prototypes of the tower's width
  (``keep_ftime`` caps them);
- their rarity measures, ``min(N, keep_snum)`` rows (``keep_snum`` caps them);
- per rarity layer, ``min(N, keep_inum)`` foreground features, and as many scores and image embeddings with
  re-scoring (``keep_inum`` caps them);
- the foreground map, ``h*w``.

At the authors' defaults (``keep_ftime`` 3, ``keep_snum`` 200, ``keep_inum`` 1000) the bank of 1,000 images has every
capped shape: 3 images' worth of prototypes, 200 rows of measures, 1,000 remembered images. The step on it then is
the step of every later image, whatever the length of the line.

**Memory over a long run** (``--online-memory-images``): that many real steps on random plain-pass tokens (no CLIP
pass), with the bytes of the bank's parts, the resident set size and its peak every ``--online-memory-every`` images:
flat once the caps are reached.

Example:
    RareCLIP's setting, ViT-L-14-336 at 518 px with random weights, banks of 10, 100 and 1,000 images, 3 timed runs::

        python -m anomalib_adaclip.benchmark.speed --backbone ViT-L-14-336 --image-size 518 --images 3 \
            --warmup 1 --online-banks 10 100 1000 --json online.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from anomalib_adaclip.benchmark.environment import environment, load_average
from anomalib_adaclip.benchmark.speed import BenchmarkError, PeakMemory, current_memory
from anomalib_adaclip.benchmark.speed.measure import Timing, autocast, gigabytes, parse_backbone, time_runs
from anomalib_adaclip.model.backbone import backbone_config
from anomalib_adaclip.model.mutual_scoring import PlainTokens
from anomalib_adaclip.model.rarity import RarityScoring
from anomalib_adaclip.model.rarity_bank import RarityBank
from anomalib_adaclip.quiet import quiet_loggers

__all__ = [
    "bank_shapes",
    "build_scorer",
    "format_online",
    "measure_online",
    "measure_online_memory",
    "online_layers",
    "percentile",
    "random_tokens",
    "run_online",
    "synthetic_bank",
]

# The authors' layers for ViT-L's 24 blocks, as fractions of the depth: text (12, 16, 20, 24), rarity (6, 12, 18, 24).
_TEXT_FRACTIONS = (1 / 2, 2 / 3, 5 / 6, 1)
_RARITY_FRACTIONS = (1 / 4, 1 / 2, 3 / 4, 1)


def online_layers(n_blocks: int) -> tuple[list[int], list[int]]:
    """The text and rarity layers (1-based) of a tower of ``n_blocks``: the authors' ViT-L layers, scaled.

    24 blocks give the authors' ``(12, 16, 20, 24)`` and ``(6, 12, 18, 24)``; 12 blocks ``(6, 8, 10, 12)`` and
    ``(3, 6, 9, 12)`` (the reference fixture's); a shallower tower gets fewer distinct layers.
    """

    def scaled(fractions: Sequence[float]) -> list[int]:
        return list(dict.fromkeys(max(1, round(n_blocks * fraction)) for fraction in fractions))

    return scaled(_TEXT_FRACTIONS), scaled(_RARITY_FRACTIONS)


def build_scorer(
    backbone: str | dict[str, Any], image_size: int, device: torch.device, **settings: Any
) -> RarityScoring:
    """RarityScoring with random CLIP and TPB weights, the layers of :func:`online_layers`, on ``device``.

    ``settings`` are other fields of :class:`~anomalib_adaclip.config.RarityScoringConfig` (``keep_inum``, ...).
    """
    n_blocks = int(backbone_config(backbone)["vision_cfg"].get("layers", 12))
    text_layers, rarity_layers = online_layers(n_blocks)
    # The random-weights warnings (CLIP and TPB) are expected here.
    with quiet_loggers("anomalib_adaclip.model.backbone", "anomalib_adaclip.model.rarity"):
        torch.manual_seed(0)
        scorer = RarityScoring(
            backbone, None, image_size, text_layers=text_layers, rarity_layers=rarity_layers, **settings
        )
    scorer = scorer.to(device)
    scorer.reset()
    return scorer


def _unit(values: torch.Tensor) -> torch.Tensor:
    return values / values.norm(dim=-1, keepdim=True)


def _token_shape(scorer: RarityScoring) -> tuple[int, int, int]:
    return len(scorer.token_blocks), scorer.grid * scorer.grid, scorer.visual.conv1.out_channels


def random_tokens(scorer: RarityScoring, seed: int) -> PlainTokens:
    """One image's plain-pass tokens of the scorer's shapes (random, seeded), as :meth:`RarityScoring.tokens` gives."""
    generator = torch.Generator().manual_seed(seed)
    n_blocks, patches, width = _token_shape(scorer)
    device = scorer.text_features.device
    layers = [torch.randn(1, patches, width, generator=generator).to(device) for _ in range(n_blocks)]
    embedding = _unit(torch.randn(1, scorer.text_features.shape[0], generator=generator)).to(device)
    return PlainTokens(layers, embedding)


def bank_shapes(scorer: RarityScoring, n_images: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the bank that ``n_images`` steps leave (``RarityBank.state_dict`` keys).

    ``keep_ftime`` caps the prototypes, ``keep_snum`` the rows of measures, ``keep_inum`` the remembered images
    (``k_shot`` 0: the benchmark's scorer has no normal references).
    """
    cfg = scorer.settings
    _, patches, width = _token_shape(scorer)
    prototypes = min(n_images * patches, scorer.prototypes_kept)
    rows = min(n_images, cfg.keep_snum)
    remembered = min(n_images, cfg.keep_inum)
    n_layers, n_r = len(cfg.rarity_layers), len(scorer.bank.features)
    shapes: dict[str, tuple[int, ...]] = {"foreground": (patches,) if n_images else (0,)}
    rescored = cfg.rescoring and n_images
    shapes["scores"] = (remembered,) if rescored else (0,)
    shapes["embeddings"] = (remembered, scorer.text_features.shape[0]) if rescored else (0,)
    for ri in range(n_r):
        for li in range(n_layers):
            shapes[f"features.{ri}.{li}"] = (prototypes, width) if n_images else (0,)
            shapes[f"measures.{ri}.{li}"] = (rows, prototypes) if n_images else (0,)
    for li in range(n_layers):
        shapes[f"aaif.{li}"] = (remembered, width) if n_images else (0,)
    return shapes


def synthetic_bank(scorer: RarityScoring, n_images: int, seed: int = 0) -> RarityBank:
    """The bank ``n_images`` steps would leave, in shapes (:func:`bank_shapes`), with random values.

    Prototypes, foreground features and embeddings are unit vectors; measures and the foreground map lie in
    ``[0, 1]`` as RareCLIP's do; the scores are random.
    """
    generator = torch.Generator().manual_seed(seed)
    device = scorer.text_features.device
    shapes = bank_shapes(scorer, n_images)

    def unit(key: str) -> torch.Tensor:
        shape = shapes[key]
        return (_unit(torch.randn(*shape, generator=generator)) if len(shape) > 1 else torch.zeros(0)).to(device)

    def uniform(key: str) -> torch.Tensor:
        return torch.rand(*shapes[key], generator=generator).to(device)

    n_layers, n_r = len(scorer.settings.rarity_layers), len(scorer.bank.features)
    state: dict[str, Any] = {"seen": n_images, "foreground": uniform("foreground"), "scores": uniform("scores")}
    state["embeddings"] = unit("embeddings")
    for ri in range(n_r):
        for li in range(n_layers):
            state[f"features.{ri}.{li}"] = unit(f"features.{ri}.{li}")
            state[f"measures.{ri}.{li}"] = uniform(f"measures.{ri}.{li}")
            state[f"normal_counts.{ri}.{li}"] = 0
    for li in range(n_layers):
        state[f"aaif.{li}"] = unit(f"aaif.{li}")
    return RarityBank.from_state_dict(state, n_layers, n_r)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``values``, linearly interpolated between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _latency(timings: Sequence[Timing]) -> dict[str, Any]:
    seconds = [s for timing in timings for s in timing.seconds]
    cpu = [s for timing in timings for s in timing.cpu_seconds]
    return {
        "runs": len(seconds),
        "p50_seconds": percentile(seconds, 50),
        "p95_seconds": percentile(seconds, 95),
        "mean_seconds": sum(seconds) / len(seconds),
        "cpu_seconds_per_image": sum(cpu) / len(cpu),
    }


def _bank_sizes(bank: RarityBank) -> dict[str, Any]:
    """The bank's bytes, split into the prototype banks and the memories of earlier images, and its shapes."""
    prototypes = sum(t.numel() * t.element_size() for row in (*bank.features, *bank.measures) for t in row)
    return {
        "bank_bytes": bank.nbytes(),
        "prototype_bytes": prototypes,
        "image_memory_bytes": bank.nbytes() - prototypes,
        "prototypes": bank.prototypes,
        "measure_rows": int(bank.measures[0][0].shape[0]),
        "remembered_images": int(bank.aaif[0].shape[0]),
    }


def measure_online(
    scorer: RarityScoring, banks: Sequence[int], runs: int, warmup: int = 1, precision: str = "fp32"
) -> dict[str, Any]:
    """Time the CLIP pass and the rarity step on a bank of each size of ``banks``, one run of each in turn.

    Each rarity step starts from the same bank (:func:`synthetic_bank`): the image is scored against it and admitted
    (:meth:`RarityScoring.step_tokens`, coreset sampling and forgetting included). ``warmup`` rounds are not timed.

    Returns:
        ``clip`` and, per bank, ``banks[i]``: ``runs``, ``p50_seconds``, ``p95_seconds``, ``mean_seconds`` and
        ``cpu_seconds_per_image`` per image; each bank also its sizes (``bank_bytes``, ``prototype_bytes``,
        ``image_memory_bytes``, ``prototypes``, ``measure_rows``, ``remembered_images``), ``peak_memory_bytes`` (of
        the process during its steps) and ``memory_kind``.
    """
    device = scorer.text_features.device
    image = torch.randn(1, 3, scorer.image_size, scorer.image_size, generator=torch.Generator().manual_seed(0))
    image = image.to(device)
    tokens = random_tokens(scorer, seed=1)
    built = {n: synthetic_bank(scorer, n, seed=n) for n in banks}
    memory = PeakMemory(device)
    peaks = dict.fromkeys(banks, 0)

    def step(bank: RarityBank) -> None:
        scorer.bank = bank
        scorer.step_tokens(tokens)

    clip_timings: list[Timing] = []
    step_timings: dict[int, list[Timing]] = {n: [] for n in banks}
    with torch.inference_mode(), autocast(device, precision):
        for round_ in range(warmup + runs):
            timed = round_ >= warmup
            clip = time_runs(lambda: scorer.tokens(image))
            if timed:
                clip_timings.append(clip)
            for n in banks:
                memory.reset()
                timing = time_runs(lambda n=n: step(built[n]))
                if timed:
                    step_timings[n].append(timing)
                    peaks[n] = max(peaks[n], memory.peak())
    scorer.reset()
    return {
        "clip": _latency(clip_timings),
        "banks": [
            {
                "images": n,
                **_latency(step_timings[n]),
                **_bank_sizes(built[n]),
                "peak_memory_bytes": peaks[n],
                "memory_kind": memory.kind,
            }
            for n in banks
        ],
    }


def measure_online_memory(
    scorer: RarityScoring, images: int, every: int = 100, on_row: Callable[[dict[str, Any]], Any] | None = None
) -> list[dict[str, Any]]:
    """Step ``images`` images of random plain-pass tokens through an empty bank; the memory every ``every`` images.

    ``on_row`` is called with each row as it is measured (a long run shows its progress).

    Returns:
        After images ``every``, ``2 * every``, ... (and the last): ``images``, the bank's sizes (see
        :func:`measure_online`), ``resident_bytes`` (the process now: the resident set size on the CPU, allocated
        memory on a GPU), ``peak_memory_bytes`` (since the first step) and ``memory_kind``.
    """
    device = scorer.text_features.device
    memory = PeakMemory(device)
    scorer.reset()
    rows = []
    memory.reset()
    with torch.inference_mode():
        for index in range(1, images + 1):
            scorer.step_tokens(random_tokens(scorer, seed=index))
            if index % every == 0 or index == images:
                rows.append(
                    {
                        "images": index,
                        **_bank_sizes(scorer.bank),
                        "resident_bytes": current_memory(device),
                        "peak_memory_bytes": memory.peak(),
                        "memory_kind": memory.kind,
                    }
                )
                if on_row is not None:
                    on_row(rows[-1])
    scorer.reset()
    return rows


def run_online(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The online mode's report: the CLIP pass and the rarity steps per bank, and the memory over a long run."""
    if args.k_shot or args.mutual_group_sizes or args.runtime != ["torch"] or args.profile or args.compare_batch1:
        msg = (
            "--online-banks and --online-memory-images measure RareCLIP's rarity scoring alone, one image at a time: "
            "leave out --k-shot, --mutual-group-sizes, --runtime openvino, --profile and --compare-batch1."
        )
        raise BenchmarkError(msg)
    banks = list(dict.fromkeys(args.online_banks or []))
    if any(n < 1 for n in banks) or args.online_memory_images < 0 or args.online_memory_every < 1:
        msg = (
            f"--online-banks must count at least 1 image each (got {banks}), --online-memory-images at least 0 and "
            f"--online-memory-every at least 1."
        )
        raise BenchmarkError(msg)
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = parse_backbone(args.backbone)
    settings = {"keep_inum": args.online_keep_inum} if args.online_keep_inum else {}
    memory_before_model = current_memory(device)
    try:
        scorer = build_scorer(backbone, args.image_size, device, **settings)
    except (ValueError, TypeError) as error:
        msg = f"Cannot build RarityScoring with --backbone {args.backbone!r} --image-size {args.image_size}: {error}"
        raise BenchmarkError(msg) from error
    cfg = scorer.settings
    report: dict[str, Any] = {
        "backbone": args.backbone if isinstance(backbone, str) else backbone,
        "image_size": args.image_size,
        "device": str(device),
        "precision": args.precision,
        "hsf": False,
        "warmup_batches": args.warmup,
        "memory_before_model_bytes": memory_before_model,
        "memory_with_model_bytes": current_memory(device),
        **environment(device),
        "notes": [],
    }
    n_layers, patches, width = _token_shape(scorer)
    report["online"] = {
        "text_layers": list(cfg.text_layers),
        "rarity_layers": list(cfg.rarity_layers),
        "keep_ftime": cfg.keep_ftime,
        "keep_snum": cfg.keep_snum,
        "keep_inum": cfg.keep_inum,
        "rescoring": cfg.rescoring,
        "token_shape": [n_layers, patches, width],
    }
    if banks:
        report["online"].update(measure_online(scorer, banks, args.images, args.warmup, args.precision))
    if args.online_memory_images:
        report["online"]["memory_every"] = args.online_memory_every
        report["online"]["memory"] = measure_online_memory(
            scorer, args.online_memory_images, args.online_memory_every, on_row=_print_progress
        )
    report["load_average_after"] = load_average()
    return report


def _print_progress(row: dict[str, Any]) -> None:
    """A memory row on standard error as it is measured (the report prints them all at the end)."""
    print(
        f"memory after {row['images']} images: bank {_megabytes(row['bank_bytes'])}, resident "
        f"{_megabytes(row['resident_bytes'])}, peak {_megabytes(row['peak_memory_bytes'])}",
        file=sys.stderr,
        flush=True,
    )


def _megabytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f} MB"


def format_online(online: dict[str, Any]) -> list[str]:
    """The report's lines of the online mode: the CLIP pass and each bank's rarity step; the memory over the run."""
    n_layers, patches, width = online["token_shape"]
    lines = [
        f"online rarity scoring (RareCLIP): text layers {online['text_layers']}, rarity layers "
        f"{online['rarity_layers']} ({n_layers} blocks of [{patches}, {width}] tokens), keep_ftime "
        f"{online['keep_ftime']:g}, keep_snum {online['keep_snum']}, keep_inum {online['keep_inum']}, re-scoring "
        f"{'on' if online['rescoring'] else 'off'}",
    ]
    if "clip" in online:
        clip = online["clip"]
        lines += [
            "per image, one run of each in turn: the plain CLIP pass, then the rarity step (score + bank update, "
            "coreset sampling included) on a bank of N earlier images (synthetic: the shapes N steps leave)",
            f"{'part':>14} {'runs':>4} {'p50 s':>8} {'p95 s':>8} {'CPU s':>7} {'x CLIP':>6} {'bank':>9} "
            f"{'prototypes':>10} {'rows':>5} {'images':>6} {'peak memory':>12}",
            f"{'CLIP pass':>14} {clip['runs']:>4} {clip['p50_seconds']:>8.3f} {clip['p95_seconds']:>8.3f} "
            f"{clip['cpu_seconds_per_image']:>7.3f} {1:>6.2f}",
        ]
        for bank in online["banks"]:
            lines.append(
                f"{'step, N=' + str(bank['images']):>14} {bank['runs']:>4} {bank['p50_seconds']:>8.3f} "
                f"{bank['p95_seconds']:>8.3f} {bank['cpu_seconds_per_image']:>7.3f} "
                f"{bank['p50_seconds'] / clip['p50_seconds']:>6.2f} {_megabytes(bank['bank_bytes']):>9} "
                f"{bank['prototypes']:>10} {bank['measure_rows']:>5} {bank['remembered_images']:>6} "
                f"{gigabytes(bank['peak_memory_bytes']):>12}"
            )
        lines.append(
            "(x CLIP: the step's p50 over the CLIP pass's; prototypes per r and layer, rows of measures, remembered "
            "images: the caps keep_ftime * h*w, keep_snum, keep_inum)"
        )
    if "memory" in online:
        lines += [
            "",
            f"memory over {online['memory'][-1]['images']} images (random plain-pass tokens, every "
            f"{online['memory_every']} images): the bank = prototypes + memories of earlier images",
            f"{'images':>6} {'bank':>9} {'prototypes':>10} {'per-image':>9} {'rows':>5} {'images':>6} "
            f"{'resident':>9} {'peak':>9}",
        ]
        for row in online["memory"]:
            lines.append(
                f"{row['images']:>6} {_megabytes(row['bank_bytes']):>9} {_megabytes(row['prototype_bytes']):>10} "
                f"{_megabytes(row['image_memory_bytes']):>9} {row['measure_rows']:>5} {row['remembered_images']:>6} "
                f"{_megabytes(row['resident_bytes']):>9} {_megabytes(row['peak_memory_bytes']):>9}"
            )
    return lines
