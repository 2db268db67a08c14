"""The visualiser of AdaCLIP: anomalib's image panels with the decision written onto the image.

:class:`AdaCLIPVisualizer` is anomalib's :class:`~anomalib.visualization.ImageVisualizer` (same panels, same
folders) that also writes the decision onto the image panel: ``NG 0.734 > 0.500`` on red or ``OK 0.213 <= 0.500``
on green. PNG files also carry it as text chunks (``Decision``, ``Score``, ``Threshold``). Before a run writes into a
folder that already holds visualisations (anomalib's ``test`` and ``predict`` reuse ``latest``), it says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image import add_text_to_image
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from anomalib_adaclip.compat import generate_output_filename

from .decisions import applied_threshold, decision

if TYPE_CHECKING:
    from anomalib.data import ImageBatch, ImageItem
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

__all__ = ["AdaCLIPVisualizer"]


DECISION_COLOURS = {"NG": (200, 0, 0, 230), "OK": (0, 130, 0, 230), "": (0, 0, 0, 160)}


class AdaCLIPVisualizer(ImageVisualizer):
    """anomalib's image visualiser, with the decision and the score written onto the image panel.

    Takes every argument of :class:`~anomalib.visualization.ImageVisualizer`; the files go where it puts them
    (``<results>/images/...``).

    Args:
        *args: Passed to ``ImageVisualizer``.
        show_decision: Write ``NG``/``OK``, the score and the threshold onto each image. Defaults to ``True``.
        **kwargs: Passed to ``ImageVisualizer``.
    """

    def __init__(self, *args: Any, show_decision: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.show_decision = show_decision

    def decision_text(self, item: ImageItem, image_threshold: float | None) -> str:
        """``"NG 0.734 > 0.500"``, ``"OK 0.213 <= 0.500"``, or the score alone when there is no decision."""
        if item.pred_score is None:
            return decision(item.pred_label)
        score = float(item.pred_score)
        verdict = decision(item.pred_label)
        if not verdict:
            return f"score {score:.3f}"
        if image_threshold is None:
            return f"{verdict} {score:.3f}"
        return f"{verdict} {score:.3f} {'>' if verdict == 'NG' else '<='} {image_threshold:.3f}"

    def render(self, item: ImageItem, image_threshold: float | None) -> Image.Image | None:
        """The visualisation of one post-processed item, with its decision written on it (``show_decision``).

        Args:
            item: A post-processed item (its ``image_path`` gives the original image).
            image_threshold: The threshold the decision used, shown after the score.

        Returns:
            The image, or ``None`` when the item has nothing to show.
        """
        image = self.visualize(item)
        if image is None:
            return None
        text = self.decision_text(item, image_threshold)
        if self.show_decision and text:
            image = self._annotate(image, text)
        return image

    def _annotate(self, image: Image.Image, text: str) -> Image.Image:
        size = max(12, self.field_size[1] // 14)
        position = (8, image.height - size - 12)
        background = DECISION_COLOURS.get(text.split(" ", 1)[0], DECISION_COLOURS[""])
        return add_text_to_image(image, text, size=size, color="white", background=background, position=position)

    def _warn_if_folder_holds_images(self, trainer: Trainer) -> None:
        """Say so when this run's images will replace an earlier run's (anomalib's test/predict reuse ``latest``)."""
        folder = Path(self.output_dir or Path(trainer.default_root_dir) / "images")
        if folder.is_dir() and any(path.is_file() for path in folder.rglob("*")):
            logger.warning(
                "%s holds visualisations of an earlier run; images of the same name will be replaced (anomalib's "
                "test and predict write into the results folder's 'latest' version). Give the Engine another "
                "default_root_dir to keep them.",
                folder,
            )

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn before replacing an earlier run's visualisations."""
        del pl_module
        self._warn_if_folder_holds_images(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn before replacing an earlier run's visualisations."""
        del pl_module
        self._warn_if_folder_holds_images(trainer)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Visualise each image of the batch, write its decision onto it and save it where anomalib would."""
        del outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        image_threshold = applied_threshold(pl_module, "image")
        datamodule = getattr(trainer, "datamodule", None)
        for item in batch:
            image = self.render(item, image_threshold)
            if image is None:
                continue
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=getattr(datamodule, "name", None) if datamodule else None,
                category=getattr(datamodule, "category", None) if datamodule else None,
            )
            if filename.suffix.lower() == ".png":
                info = PngInfo()
                info.add_text("Decision", decision(item.pred_label))
                if item.pred_score is not None:
                    info.add_text("Score", repr(float(item.pred_score)))
                if image_threshold is not None:
                    info.add_text("Threshold", repr(image_threshold))
                image.save(filename, pnginfo=info)
            else:
                image.save(filename)
