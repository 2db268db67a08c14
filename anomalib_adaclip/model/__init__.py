"""The PyTorch model of AdaCLIP: a frozen open_clip CLIP with hybrid learnable prompts.

:class:`AdaCLIPModel` (:mod:`.torch_model`) is assembled from small parts: the backbone factory (:mod:`.backbone`),
the prompts and their generators (:mod:`.prompting`), the prefix tree of the prompt sentences
(:mod:`.sentence_tree`), the lean attention block (:mod:`.blocks`), Hybrid Semantic Fusion (:mod:`.hsf`), the
training loss (:mod:`.loss`) and the Gaussian blur of the map (:mod:`.blur`). Beside it: MuSc's mutual scoring
(:mod:`.mutual_scoring`) and RareCLIP's online rarity scoring (:mod:`.rarity`).
"""

from .mutual_scoring import MutualScoring, PlainTokens, mutual_patch_scores
from .rarity import RarityScoring, ScoredImage
from .rarity_bank import RarityBank
from .torch_model import AdaCLIPFeatures, AdaCLIPModel, AdaCLIPTrainOutput

__all__ = [
    "AdaCLIPFeatures",
    "AdaCLIPModel",
    "AdaCLIPTrainOutput",
    "MutualScoring",
    "PlainTokens",
    "RarityBank",
    "RarityScoring",
    "ScoredImage",
    "mutual_patch_scores",
]
