"""AdaCLIP (Cao et al., ECCV 2024) as an anomalib 2.x model plugin.

- :class:`AdaCLIP`: the anomalib model (Engine, CLI, export);
- :class:`AdaCLIPModel`: the PyTorch model;
- :class:`AdaCLIPConfig`: their hyper-parameters; :class:`FewShotConfig`: the few-shot settings;
- :class:`MutualScoring`: MuSc's mutual scoring of a group of unlabelled images (:class:`MutualScoringConfig`);
- :class:`RarityScoring`: RareCLIP's online rarity scoring, one image after another (:class:`RarityScoringConfig`).
"""

from .config import AdaCLIPConfig, FewShotConfig, MutualScoringConfig, RarityScoringConfig
from .lightning_model import AdaCLIP
from .model import AdaCLIPModel, MutualScoring, RarityScoring

__all__ = [
    "AdaCLIP",
    "AdaCLIPConfig",
    "AdaCLIPModel",
    "FewShotConfig",
    "MutualScoring",
    "MutualScoringConfig",
    "RarityScoring",
    "RarityScoringConfig",
]
__version__ = "0.1.0"  # the package version (pyproject reads it); CHANGELOG.md says what each one changed
