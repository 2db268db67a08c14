"""Draw AdaCLIP's architecture as docs/source/_static/adaclip_architecture.png (the model page's figure).

The paper's figure is not in the repository (nor may it be downloaded), so the diagram is drawn from the model's code:
the frozen CLIP with hybrid prompts on both towers (``model/prompting.py``, ``model/vision.py``), the projected patch
tokens of the feature layers against the normal/abnormal text embeddings (``model/torch_model.py``), the maps summed
and blurred, and Hybrid Semantic Fusion for the image score (``model/hsf.py``).

    python tools/architecture_figure.py            # rewrites the PNG
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "source" / "_static" / "adaclip_architecture.png"
FROZEN, LEARNED, DATA, OUTPUT_COLOUR = "#dbe7f3", "#f8d9b4", "#eeeeee", "#d5ecd4"


def box(axes: plt.Axes, x: float, y: float, width: float, height: float, text: str, colour: str) -> None:
    """A rounded box with centred text, ``(x, y)`` its lower left corner."""
    patch = FancyBboxPatch(
        (x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour, edgecolor="#444444"
    )
    axes.add_patch(patch)
    axes.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=9, wrap=True)


def arrow(axes: plt.Axes, start: tuple[float, float], end: tuple[float, float], text: str = "") -> None:
    """An arrow from ``start`` to ``end``, with an optional label at its middle."""
    axes.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333333", linewidth=1.2))
    if text:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        axes.text(middle[0] + 0.05, middle[1] + 0.08, text, fontsize=8, color="#333333")


def draw(path: Path = OUTPUT) -> Path:
    """Draw the figure into ``path`` (PNG) and return it."""
    figure, axes = plt.subplots(figsize=(11, 5.2), dpi=130)
    axes.set_xlim(0, 11)
    axes.set_ylim(0, 5.2)
    axes.axis("off")

    box(axes, 0.2, 3.4, 1.5, 0.9, "image\n[3, 518, 518]", DATA)
    box(axes, 0.2, 0.8, 1.5, 0.9, 'class name\n"screw"', DATA)
    box(
        axes,
        2.3,
        3.2,
        2.4,
        1.3,
        "CLIP vision tower (frozen)\n+ visual prompts in the\nfirst blocks (static + dynamic)",
        FROZEN,
    )
    box(axes, 2.3, 0.6, 2.4, 1.3, "CLIP text tower (frozen)\n+ textual prompts\n(static + dynamic)", FROZEN)
    box(axes, 2.5, 2.15, 2.0, 0.7, "prompt generator\n(dynamic prompts)", LEARNED)
    box(axes, 5.3, 3.3, 2.0, 1.1, "patch tokens of the\nfeature layers,\nprojected (learned)", LEARNED)
    box(axes, 5.3, 0.7, 2.0, 1.1, "normal / abnormal\ntext embeddings\n(prompt ensemble)", LEARNED)
    box(axes, 7.9, 3.3, 1.3, 1.1, "cosine\nsimilarity\nper layer", FROZEN)
    box(axes, 9.6, 3.5, 1.3, 0.9, "anomaly map\n(sum, blur)", OUTPUT_COLOUR)
    box(axes, 7.9, 1.6, 1.3, 1.1, "Hybrid\nSemantic\nFusion (k-means)", FROZEN)
    box(axes, 9.6, 1.7, 1.3, 0.9, "image score\n(+ CLS score)", OUTPUT_COLOUR)

    arrow(axes, (1.7, 3.85), (2.3, 3.85))
    arrow(axes, (1.7, 1.25), (2.3, 1.25))
    arrow(axes, (1.2, 3.4), (2.5, 2.5), "")
    arrow(axes, (3.5, 2.85), (3.5, 3.2))
    arrow(axes, (3.5, 2.15), (3.5, 1.9))
    arrow(axes, (4.7, 3.85), (5.3, 3.85))
    arrow(axes, (4.7, 1.25), (5.3, 1.25))
    arrow(axes, (7.3, 3.85), (7.9, 3.85))
    arrow(axes, (7.3, 1.25), (8.55, 3.3))
    arrow(axes, (9.2, 3.85), (9.6, 3.95))
    arrow(axes, (8.55, 3.3), (8.55, 2.7))
    arrow(axes, (9.2, 2.15), (9.6, 2.15))

    axes.text(0.2, 4.85, "AdaCLIP: hybrid learnable prompts on a frozen CLIP (Cao et al., ECCV 2024)", fontsize=11,
              weight="bold")  # fmt: skip
    legend = [
        (FROZEN, "frozen CLIP / fixed computation"),
        (LEARNED, "trained on auxiliary data"),
        (OUTPUT_COLOUR, "output"),
    ]
    for index, (colour, label) in enumerate(legend):
        box(axes, 0.2 + index * 3.4, 0.02, 0.35, 0.3, "", colour)
        axes.text(0.65 + index * 3.4, 0.17, label, fontsize=8, va="center")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})  # no version stamp: the same figure gives the same bytes
    plt.close(figure)
    return path


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT))
