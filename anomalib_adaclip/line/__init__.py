"""The running line: images scored as a camera writes them into a folder (``anomalib-adaclip watch``).

Each file is scored once, in arrival order, into the same predictions table as ``predict``; the scorer's bank learns
only from admitted images, freezes on a streak of NG images, and is snapshotted so that a killed line restarts
without losing or repeating a part. Documentation: docs/source/guides/running_line.md.
"""

from .admission import Admission, Verdict
from .config import LineConfig
from .hot_folder import HotFolder, ReadyFile, is_temporary
from .latency import LatencyLog
from .runner import NOT_SCORED, LineError, LineRunner, LineSummary
from .scorer import AdaCLIPLineScorer, LineScore, LineScorer, RarityLineScorer, ScorerError, load_scorer
from .snapshots import Snapshot, SnapshotError, bank_lock, load_snapshot, save_snapshot

__all__ = [
    "NOT_SCORED",
    "AdaCLIPLineScorer",
    "Admission",
    "HotFolder",
    "LatencyLog",
    "LineConfig",
    "LineError",
    "LineRunner",
    "LineScore",
    "LineScorer",
    "LineSummary",
    "RarityLineScorer",
    "ReadyFile",
    "ScorerError",
    "Snapshot",
    "SnapshotError",
    "Verdict",
    "bank_lock",
    "is_temporary",
    "load_scorer",
    "load_snapshot",
    "save_snapshot",
]
