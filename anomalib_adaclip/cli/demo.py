"""``anomalib-adaclip demo``: a local web page to try AdaCLIP on your own images.

``anomalib-adaclip demo`` serves the page on http://127.0.0.1:7860 with the released ``mvtec_colondb`` checkpoint on
ViT-L-14-336 (``openai`` weights) at 518 px; the model is built on the first run and kept. ``--smoke`` uses the quick
start's tiny random backbone instead (offline, meaningless outputs, and the page says so). The page's online (rarity)
scoring uses AdaCLIP's map as its text side, or RareCLIP's own text branch with ``--rarity-tpb-weights FILE``. Needs
``pip install -e ".[demo]"`` (gradio).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from anomalib_adaclip.config import AdaCLIPConfig
from anomalib_adaclip.weights import OFFLINE_ENV, downloads_disabled

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``anomalib-adaclip demo`` parser."""
    parser = argparse.ArgumentParser(
        prog="anomalib-adaclip demo",
        description=(
            "Serve a local web page: upload images, name the object, see anomaly maps, scores and OK/NG decisions, "
            "download the predictions CSV and the overlays. Needs pip install -e '.[demo]'."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--share", action="store_true", help="also ask gradio for a public share link (reaches the internet)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the quick start's tiny random backbone: offline, no weights needed, meaningless outputs",
    )
    parser.add_argument(
        "--checkpoint", default="mvtec_colondb", help="released checkpoint name or file (default mvtec_colondb)"
    )
    parser.add_argument("--backbone", default=AdaCLIPConfig.backbone, help="open_clip backbone (default ViT-L-14-336)")
    parser.add_argument(
        "--backbone-weights", default="openai", help="open_clip pretrained tag or weights file (default openai)"
    )
    parser.add_argument("--image-size", type=int, default=AdaCLIPConfig.image_size, help="model input side in px")
    parser.add_argument("--class-name", default="", help="the class name the page starts with")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--offline", action="store_true", help=f"never download weights (as {OFFLINE_ENV}=1)")
    parser.add_argument(
        "--max-megapixels", type=float, default=50.0, help="larger images are refused with a message (default 50)"
    )
    parser.add_argument(
        "--rarity-tpb-weights",
        type=Path,
        default=None,
        help=(
            "RareCLIP's TPB weight file: the page's online (rarity) scoring then uses RareCLIP's own text branch "
            "(ViT-L backbones); without it AdaCLIP's map is the text side"
        ),
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="folder of the runs' CSV and zip files (default: a temporary one)"
    )
    return parser


def main(arguments: list[str]) -> int:
    """Run ``anomalib-adaclip demo``; returns the exit code (2 when gradio is missing)."""
    options = build_parser().parse_args(arguments)
    if importlib.util.find_spec("gradio") is None:
        print(
            'The demo needs gradio, an optional dependency: pip install -e ".[demo]" (or pip install gradio).',
            file=sys.stderr,
        )
        return 2
    from anomalib_adaclip.demo import DemoModelSettings, DemoSession  # noqa: PLC0415
    from anomalib_adaclip.demo.app import launch  # noqa: PLC0415  (imports gradio)

    offline = options.offline or downloads_disabled()
    if options.rarity_tpb_weights is not None and not options.rarity_tpb_weights.is_file():
        print(f"--rarity-tpb-weights: no such file: {options.rarity_tpb_weights}", file=sys.stderr)
        return 2
    settings = None
    if not options.smoke:
        settings = DemoModelSettings(options.backbone, options.backbone_weights, options.checkpoint, options.image_size)
    session = DemoSession(
        settings,
        device=options.device,
        smoke=options.smoke,
        offline=offline,
        max_megapixels=options.max_megapixels,
        output_dir=options.output,
        tpb_weights=options.rarity_tpb_weights,
    )
    model = session.default_settings.describe()
    print(f"AdaCLIP demo: {model} on {session.device}; the model is built on the first run.")
    launch(session, host=options.host, port=options.port, share=options.share, class_name=options.class_name)
    return 0
