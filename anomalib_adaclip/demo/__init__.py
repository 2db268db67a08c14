"""The browser demo (``anomalib-adaclip demo``): upload images, name the object, see heatmaps, scores and decisions.

- :mod:`.session`: the requests: checks of the inputs, scoring, and the steps of a run (no web page, no gradio);
- :mod:`.models`: what a model is built from (:class:`~.models.DemoModelSettings`), and the kept zero- and few-shot
  models;
- :mod:`.banks`: online (rarity) scoring: one bank per browser session (:class:`~.banks.SessionBank`);
- :mod:`.results`: what a run answers, per image and per run;
- :mod:`.run_files`: each run's folder, with the predictions CSV and the overlays' zip;
- :mod:`.app`: the Gradio page around a :class:`~.session.DemoSession` (needs ``pip install -e ".[demo]"``).

Importing this package does not import gradio.
"""

from .banks import SessionBank
from .models import DemoModelSettings, MissingWeightsError, smoke_settings
from .results import ImageResult, RunResult
from .session import DemoSession, example_images

__all__ = [
    "DemoModelSettings",
    "DemoSession",
    "ImageResult",
    "MissingWeightsError",
    "RunResult",
    "SessionBank",
    "example_images",
    "smoke_settings",
]
