"""AdaCLIP zero-shot anomaly detection (Cao et al., ECCV 2024) as an anomalib model plugin.

``AdaCLIP`` is the anomalib model (Engine, CLI, export); ``AdaCLIPModel`` the underlying torch module.
"""

from .lightning_model import AdaCLIP
from .torch_model import AdaCLIPModel

__all__ = ["AdaCLIP", "AdaCLIPModel"]
__version__ = "0.1.0"
