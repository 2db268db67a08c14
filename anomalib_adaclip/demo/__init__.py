"""The browser demo (``anomalib-adaclip demo``): upload images, name the object, see heatmaps, scores and decisions.

- :mod:`.session`: the model, built once and kept, and the scoring of images with it (no web page, no gradio);
- :mod:`.app`: the Gradio page around a :class:`~.session.DemoSession` (needs ``pip install -e ".[demo]"``).

Importing this package does not import gradio.
"""

from .session import DemoSession, ImageResult, ModelSpec, RunResult, example_images, smoke_spec

__all__ = ["DemoSession", "ImageResult", "ModelSpec", "RunResult", "example_images", "smoke_spec"]
