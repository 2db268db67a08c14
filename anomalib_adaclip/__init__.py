"""AdaCLIP zero-shot anomaly detection as an anomalib model plugin."""

from .torch_model import AdaCLIPModel

__all__ = ["AdaCLIPModel"]
__version__ = "0.1.0"
