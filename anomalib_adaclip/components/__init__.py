"""The parts AdaCLIP plugs into anomalib and Lightning, each in its own module.

- :mod:`.pre_processing`: resize and CLIP normalisation; :mod:`.post_processor`: thresholds of the probabilities;
- :mod:`.class_names`: the run's class name and class names per image;
- :mod:`.tiling`: full-resolution images scored in overlapping tiles;
- :mod:`.calibration`: thresholds from known-good images (a callback of a predict run);
- :mod:`.input_files`: image and mask files checked before a run (and the callback that runs the checks);
- :mod:`.decisions`, :mod:`.visualizer` and :mod:`.prediction_writer`: what a run leaves behind;
  :mod:`.prediction_table`: the predictions CSV on disk (which table a resume appends to, per-process parts);
- :mod:`.image_scoring`: raw images scored through the same steps as a predict run, without a Trainer;
- :mod:`.references`: few-shot reference images (drawn, read, encoded; a callback);
- :mod:`.export`: what can be exported, and where;
- :mod:`.lightning_checkpoints`: Lightning checkpoints without the frozen CLIP;
- :mod:`.mutual_groups`: mutual scoring (MuSc) of groups of images in a run;
- :mod:`.attached`: the Trainer a module is attached to, if any, and its data module.

The parts the Lightning model owns, each told what it needs (none reads its owner): :class:`.class_names.ClassNames`,
:class:`.tiling.Tiling`, :class:`.references.ReferenceImages`, :class:`.mutual_groups.MutualGroupStage`,
:class:`.export.ExportGuard` and :class:`.lightning_checkpoints.FrozenBackboneCheckpoints`.
"""

from .calibration import CalibrationResult, ThresholdCalibration, calibration_loader, run_calibration
from .class_names import BatchClassNames, ClassNamedModule, ClassNameRules, ClassNames, run_class_name
from .input_files import InputFileCheck, InputFilesError
from .post_processor import AdaCLIPPostProcessor, ThresholdingMode
from .pre_processing import adaclip_transform, input_resize
from .prediction_writer import PredictionCSVWriter
from .tiling import TileScore, Tiling, check_tiling, tiled_predict
from .visualizer import AdaCLIPVisualizer

__all__ = [
    "AdaCLIPPostProcessor",
    "AdaCLIPVisualizer",
    "BatchClassNames",
    "CalibrationResult",
    "ClassNameRules",
    "ClassNamedModule",
    "ClassNames",
    "InputFileCheck",
    "InputFilesError",
    "PredictionCSVWriter",
    "ThresholdCalibration",
    "ThresholdingMode",
    "TileScore",
    "Tiling",
    "adaclip_transform",
    "calibration_loader",
    "check_tiling",
    "input_resize",
    "run_calibration",
    "run_class_name",
    "tiled_predict",
]
