"""AdaCLIPPostProcessor's normalisation: anomalib's where statistics were learned, the raw values elsewhere."""

from __future__ import annotations

import torch
from anomalib.post_processing import PostProcessor

from anomalib_adaclip.components import AdaCLIPPostProcessor

NAN = torch.tensor(float("nan"))


def test_normalisation_equals_anomalib_with_learned_statistics_and_passes_raw_values_without() -> None:
    values = torch.tensor([0.1, 0.45, 0.5, 0.7, 0.95])
    low, high, threshold = torch.tensor(0.2), torch.tensor(0.8), torch.tensor(0.6)
    for minimum, maximum, limit in ((low, high, threshold), (low, high, NAN), (low, low, threshold)):
        expected = PostProcessor._normalize(values, minimum, maximum, limit)
        assert torch.equal(AdaCLIPPostProcessor._normalize(values, minimum, maximum, limit), expected)
    # By hand: (0.7 - 0.6) / 0.6 + 0.5
    torch.testing.assert_close(AdaCLIPPostProcessor._normalize(values, low, high, threshold)[3], torch.tensor(2 / 3))
    for minimum, maximum in ((NAN, NAN), (low, NAN), (NAN, high)):
        assert torch.equal(AdaCLIPPostProcessor._normalize(values, minimum, maximum, NAN), values)
    assert AdaCLIPPostProcessor._normalize(None, low, high, threshold) is None
