"""AdaCLIPPostProcessor's normalisation: anomalib's where statistics were learned, the raw values elsewhere."""

from __future__ import annotations

import pytest
import torch
from anomalib.post_processing import PostProcessor

from anomalib_adaclip.compat import PostProcessorHooks
from anomalib_adaclip.components import AdaCLIPPostProcessor
from anomalib_adaclip.components.post_processor import set_calibrated_thresholds

NAN = torch.tensor(float("nan"))


def test_normalisation_equals_anomalib_with_learned_statistics_and_passes_raw_values_without() -> None:
    values = torch.tensor([0.1, 0.45, 0.5, 0.7, 0.95])
    low, high, threshold = torch.tensor(0.2), torch.tensor(0.8), torch.tensor(0.6)
    for minimum, maximum, limit in ((low, high, threshold), (low, high, NAN), (low, low, threshold)):
        expected = PostProcessorHooks.anomalib_normalize(values, minimum, maximum, limit)
        assert torch.equal(AdaCLIPPostProcessor.normalize_values(values, minimum, maximum, limit), expected)
    # By hand: (0.7 - 0.6) / 0.6 + 0.5
    torch.testing.assert_close(
        AdaCLIPPostProcessor.normalize_values(values, low, high, threshold)[3], torch.tensor(2 / 3)
    )
    for minimum, maximum in ((NAN, NAN), (low, NAN), (NAN, high)):
        assert torch.equal(AdaCLIPPostProcessor.normalize_values(values, minimum, maximum, NAN), values)
    assert AdaCLIPPostProcessor.normalize_values(None, low, high, threshold) is None


def test_the_mode_travels_with_anomalibs_checkpoint_configuration() -> None:
    saved = AdaCLIPPostProcessor(mode="fixed", image_sensitivity=0.7).checkpoint_config()
    assert saved["mode"] == "fixed" and saved["image_sensitivity"] == 0.7
    restored = AdaCLIPPostProcessor(mode="auto")
    restored.load_checkpoint_config(saved)
    assert restored.mode == "fixed" and restored.image_sensitivity == 0.7
    older = AdaCLIPPostProcessor(mode="adaptive")
    older.load_checkpoint_config({key: value for key, value in saved.items() if key != "mode"})
    assert older.mode == "adaptive"  # a checkpoint without a mode keeps the current one


def test_calibrated_thresholds_go_to_adaclip_s_post_processor_and_nowhere_else() -> None:
    post_processor = AdaCLIPPostProcessor(image_threshold=0.5, pixel_threshold=0.5)
    set_calibrated_thresholds(post_processor, 0.75, None)  # no pixel threshold calibrated: the fixed one stays
    assert float(post_processor.fixed_image_threshold) == 0.75
    assert float(post_processor.fixed_pixel_threshold) == 0.5
    with pytest.raises(TypeError, match=r"this model has PostProcessor\. Call calibrate\(\.\.\., apply=False\)"):
        set_calibrated_thresholds(PostProcessor(), 0.75, 0.25)
    with pytest.raises(TypeError, match="this model has NoneType"):
        set_calibrated_thresholds(None, 0.75, 0.25)
