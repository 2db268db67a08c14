"""The Gradio page of the demo: inputs on the left, overlays, table and downloads on the right.

Everything is computed by a :class:`~anomalib_adaclip.demo.session.DemoSession`; this module only lays it out and
wires the events. Nothing on the page reaches the internet: gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED``
is set before gradio is imported), the theme's fonts are served by the app itself, no share link is made unless asked,
and the predict event runs one request at a time (``concurrency_limit=1``; others wait in gradio's queue).

Each browser session has its own rarity bank (:class:`~.banks.SessionBank`) in gradio's per-session state
(``gr.State``): the page's online-scoring option scores against it, its "New bank" button empties it, and gradio
deletes it with the session's state when the tab is closed (after its grace period for a reconnect; the delete
callback empties it).
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage statistics, no version check

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from anomalib_adaclip.config import SMOKE_NOTE, AdaCLIPConfig
from anomalib_adaclip.model.prompting import sentences_text
from anomalib_adaclip.weights import RELEASED_CHECKPOINTS

from .banks import SessionBank
from .models import DemoModelSettings
from .results import TABLE_HEADERS
from .session import EXAMPLES_DIR, DemoSession, example_images

__all__ = ["CHECKPOINT_FILE_CHOICE", "build_app", "launch"]

CHECKPOINT_FILE_CHOICE = "a file (upload below)"
MAX_UPLOAD = "200mb"


def _prompts(session: DemoSession, class_name: str) -> str:
    class_name = (class_name or "").strip()
    if not class_name:
        return "Enter a class name to see its prompt sentences."
    model = session.model
    config = model.model.config if model is not None else AdaCLIPConfig()
    return sentences_text(config, class_name)


def _settings(
    session: DemoSession, checkpoint: str, checkpoint_file: str | None, backbone: str, backbone_weights: str
) -> DemoModelSettings | str:
    """The model the page asks for, or a message when it asks for something that was not given."""
    default = session.default_settings
    if session.smoke:
        return default
    if checkpoint == CHECKPOINT_FILE_CHOICE:
        if not checkpoint_file:
            return "Choose a checkpoint file first (or one of the released checkpoints)."
        checkpoint = str(checkpoint_file)
    backbone, backbone_weights = (backbone or "").strip(), (backbone_weights or "").strip()
    if not backbone or not backbone_weights:
        return "Name the backbone and its weights (an open_clip pretrained tag such as openai, or a file)."
    return DemoModelSettings(backbone, backbone_weights, checkpoint, default.image_size)


def _predict_handler(session: DemoSession) -> Callable[..., tuple[Any, ...]]:
    """The function behind the Run button: the page's inputs in, the status, results, files and bank line out."""

    def predict(
        files: list[str] | None,
        class_name: str,
        checkpoint_choice: str,
        checkpoint_path: str | None,
        backbone_name: str,
        weights: str,
        image_level: float,
        pixel_level: float,
        tiled: bool,
        reference_files: list[str] | None = None,
        together: bool = False,
        online: bool = False,
        session_bank: SessionBank | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (gradio's way to report progress)
    ) -> tuple[Any, ...]:
        bank_text = session_bank.describe() if session_bank is not None else SessionBank().describe()
        settings = _settings(session, checkpoint_choice, checkpoint_path, backbone_name, weights)
        if isinstance(settings, str):
            return settings, [], [], None, None, bank_text
        if online and session_bank is None:  # a call without the page's state (the page always passes it)
            session_bank = SessionBank()

        def report(done: int, total: int, what: str) -> None:
            progress((done, total), desc=what, unit="images")

        result = session.predict(
            files or [],
            class_name,
            settings=settings,
            image_threshold=image_level,
            pixel_threshold=pixel_level,
            tiling=tiled,
            references=reference_files or [],
            mutual=together,
            rarity=session_bank if online else None,
            progress=report,
        )
        csv_path = str(result.csv_path) if result.csv_path else None
        zip_path = str(result.zip_path) if result.zip_path else None
        bank_text = session_bank.describe() if session_bank is not None else bank_text
        return result.message, result.gallery(), result.table(), csv_path, zip_path, bank_text

    return predict


def _online_controls() -> tuple[gr.Checkbox, gr.Markdown, gr.Button, gr.State]:
    """The online-scoring option, the bank's line and its "New bank" button, and the browser session's bank."""
    rarity = gr.Checkbox(
        value=False,
        label=(
            "Score each image against the earlier images of this browser session too (online rarity scoring, "
            "RareCLIP; in upload order, one bank per session and class name)"
        ),
        elem_id="rarity",
    )
    with gr.Row():
        bank_status = gr.Markdown(SessionBank().describe(), elem_id="bank")
        new_bank = gr.Button("New bank", size="sm", elem_id="new-bank")
    # This browser session's bank; gradio deletes a closed session's state (the callback empties the bank).
    bank = gr.State(SessionBank(), delete_callback=SessionBank.clear)
    return rarity, bank_status, new_bank, bank


def build_app(session: DemoSession, class_name: str = "") -> gr.Blocks:
    """The demo page around ``session``.

    Args:
        session: The model and the scoring.
        class_name: The class name the page starts with.

    Returns:
        The Blocks app (not launched; :func:`launch` queues and serves it).
    """
    released = list(RELEASED_CHECKPOINTS)
    default_checkpoint = session.default_settings.checkpoint
    with gr.Blocks(
        title="AdaCLIP zero-shot anomaly detection",
        analytics_enabled=False,
        delete_cache=(3600, 3600),  # gradio's copies of uploads and downloads: removed after an hour
    ) as app:
        gr.Markdown(
            "# AdaCLIP zero-shot anomaly detection\n"
            "Upload images, name the object they show, and run: each image gets an anomaly map, the predicted "
            "defect contour (red), a score (the abnormal probability) and a decision, NG above the image threshold."
        )
        if session.smoke:
            gr.Markdown(f"## ⚠ {SMOKE_NOTE}", elem_id="smoke-banner")
        with gr.Row():
            with gr.Column(scale=1):
                images = gr.File(label="Images", file_count="multiple", elem_id="images")
                examples = gr.Button("Use the example images (MVTec 3D-AD tire, CC BY-NC-SA 4.0)", size="sm")
                references = gr.File(
                    label="Known-good references (optional)", file_count="multiple", elem_id="references"
                )
                gr.Markdown(
                    "Known-good references are defect-free images of the same object: with them the run is few-shot "
                    "(k = the number of references) and every image is also compared, patch by patch, with them, so "
                    "what differs from them scores higher; without them the run is zero-shot (the prompts only). "
                    "References of another size are resized to the model's input size, like the images.",
                    elem_id="references-help",
                )
                name = gr.Textbox(
                    label="Class name",
                    value=class_name,
                    placeholder="the object in the images, e.g. tire, bottle, metal-nut",
                    elem_id="class-name",
                )
                with gr.Accordion("Prompt sentences", open=False):
                    show_prompts = gr.Button("Show the sentences of this class name", size="sm")
                    prompts = gr.Textbox(label="Prompt sentences", lines=12, interactive=False, elem_id="prompts")
                if session.smoke:
                    checkpoint = gr.Dropdown(
                        choices=["none (smoke test)"], value="none (smoke test)", label="Checkpoint", interactive=False
                    )
                else:
                    choices = [*released, CHECKPOINT_FILE_CHOICE]
                    checkpoint = gr.Dropdown(
                        choices=choices,
                        value=default_checkpoint if default_checkpoint in released else CHECKPOINT_FILE_CHOICE,
                        label="Checkpoint (mvtec_colondb for anything but MVTec AD, visa_clinicdb for MVTec AD)",
                    )
                checkpoint_file = gr.File(
                    label="Checkpoint file (.pth, .pt, .safetensors)",
                    file_count="single",
                    visible=not session.smoke,
                    value=default_checkpoint if default_checkpoint and default_checkpoint not in released else None,
                )
                with gr.Accordion(
                    "Backbone (for checkpoints trained on another CLIP)", open=False, visible=not session.smoke
                ):
                    backbone = gr.Textbox(label="open_clip backbone", value=session.default_settings.backbone)
                    backbone_weights = gr.Textbox(
                        label="Backbone weights (pretrained tag or file)",
                        value=session.default_settings.backbone_weights,
                    )
                gr.Markdown(f"Model: {session.default_settings.describe()}; device {session.device}.")
                image_threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Image threshold (NG above)")
                pixel_threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Pixel threshold (mask above)")
                tiling = gr.Checkbox(
                    value=False, label="Tiled inference (full resolution, for large images with small defects)"
                )
                mutual = gr.Checkbox(
                    value=False,
                    label="Score the images against each other too (mutual scoring, MuSc; at least two images)",
                    elem_id="mutual",
                )
                rarity, bank_status, new_bank, bank = _online_controls()
                run = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(
                    label="Anomaly map and predicted mask",
                    columns=2,
                    height="auto",
                    object_fit="contain",
                    format="png",
                    elem_id="overlays",
                )
                table = gr.Dataframe(
                    headers=list(TABLE_HEADERS),
                    label="All images",
                    interactive=False,
                    wrap=True,
                    column_widths=["15%", "11%", "9%", "11%", "14%", "40%"],
                    elem_id="results-table",
                )
                with gr.Row():
                    csv_file = gr.File(label="Predictions CSV", interactive=False, elem_id="csv")
                    zip_file = gr.File(label="Overlays (zip)", interactive=False, elem_id="zip")

        predict = _predict_handler(session)

        run.click(
            predict,
            inputs=[
                images,
                name,
                checkpoint,
                checkpoint_file,
                backbone,
                backbone_weights,
                image_threshold,
                pixel_threshold,
                tiling,
                references,
                mutual,
                rarity,
                bank,
            ],
            outputs=[status, gallery, table, csv_file, zip_file, bank_status],
            concurrency_limit=1,  # one forward on the model at a time; the session's lock guards it as well
        )
        new_bank.click(session.new_bank, inputs=[bank], outputs=[bank_status])
        show_prompts.click(lambda text: _prompts(session, text), inputs=[name], outputs=[prompts])
        examples.click(lambda: [str(path) for path in example_images()], outputs=[images])
    return app


def launch(
    session: DemoSession,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    class_name: str = "",
) -> None:
    """Serve the demo until interrupted (Ctrl+C).

    Args:
        session: The model and the scoring.
        host: The address to listen on; ``0.0.0.0`` serves the whole network. Defaults to ``127.0.0.1``.
        port: The port. Defaults to gradio's (7860, or the next free one).
        share: Ask gradio for a public share link (this reaches the internet). Defaults to ``False``.
        class_name: The class name the page starts with.
    """
    app = build_app(session, class_name)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(EXAMPLES_DIR), str(Path(session.output_dir))],
        max_file_size=MAX_UPLOAD,
        footer_links=["settings"],
        ssr_mode=False,
        mcp_server=False,
        show_error=True,
    )
