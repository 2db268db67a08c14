"""``anomalib-adaclip demo``: the options become the session's settings; without gradio, a message and exit code 2.

Nothing is served here: ``launch`` and ``DemoSession`` are replaced by recorders (the page itself is tested in
``tests/unit/demo/`` and, in a browser, in ``tests/integration/test_demo_browser.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from anomalib_adaclip.cli import demo
from anomalib_adaclip.config import AdaCLIPConfig


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the session's arguments and the launch's instead of building a model and serving a page."""
    pytest.importorskip("gradio")
    import anomalib_adaclip.demo as demo_package
    from anomalib_adaclip.demo import app

    record: dict[str, Any] = {}

    class RecordingSession:
        def __init__(self, settings: Any, **kwargs: Any) -> None:
            record["settings"], record["session"] = settings, kwargs
            self.default_settings = settings or demo_package.DemoModelSettings(
                backbone="{tiny}", backbone_weights=None, checkpoint=None
            )
            self.device = "cpu"

    monkeypatch.setattr(demo_package, "DemoSession", RecordingSession)
    monkeypatch.setattr(app, "launch", lambda served_session, **kwargs: record.update(launch=kwargs))
    monkeypatch.delenv("ADACLIP_OFFLINE", raising=False)
    return record


def test_without_gradio_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert demo.main(["--smoke"]) == 2
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err


def test_the_defaults_serve_the_released_model_locally(served: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert demo.main([]) == 0
    settings = served["settings"]
    assert (settings.backbone, settings.backbone_weights, settings.checkpoint) == (
        "ViT-L-14-336",
        "openai",
        "mvtec_colondb",
    )
    assert settings.image_size == AdaCLIPConfig.image_size
    assert served["session"] == {
        "device": "auto",
        "smoke": False,
        "offline": False,
        "max_megapixels": 50.0,
        "output_dir": None,
        "tpb_weights": None,
    }
    assert served["launch"] == {"host": "127.0.0.1", "port": 7860, "share": False, "class_name": ""}
    assert capsys.readouterr().out.startswith("AdaCLIP demo: ")


def test_options_reach_the_session_and_the_page(served: dict[str, Any], tmp_path: Path) -> None:
    arguments = ["--smoke", "--device", "cpu", "--port", "8000", "--host", "0.0.0.0", "--class-name", "tire"]
    assert demo.main([*arguments, "--max-megapixels", "2.5", "--output", str(tmp_path)]) == 0
    assert served["settings"] is None  # the smoke run's tiny model is the session's own
    assert served["session"]["smoke"] is True and served["session"]["device"] == "cpu"
    assert served["session"]["max_megapixels"] == 2.5 and served["session"]["output_dir"] == tmp_path
    assert served["launch"] == {"host": "0.0.0.0", "port": 8000, "share": False, "class_name": "tire"}


@pytest.mark.parametrize(
    ("flag", "environment", "offline"), [([], "", False), (["--offline"], "", True), ([], "1", True)]
)
def test_offline_comes_from_the_flag_or_the_environment(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, flag: list[str], environment: str, offline: bool
) -> None:
    if environment:
        monkeypatch.setenv("ADACLIP_OFFLINE", environment)
    assert demo.main(["--checkpoint", "visa_clinicdb", "--image-size", "336", *flag]) == 0
    assert served["session"]["offline"] is offline
    assert served["settings"].checkpoint == "visa_clinicdb" and served["settings"].image_size == 336


def test_rarity_tpb_weights_reach_the_session_and_a_missing_file_is_refused(
    served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "tpb.pth"
    assert demo.main(["--smoke", "--rarity-tpb-weights", str(weights)]) == 2
    assert f"--rarity-tpb-weights: no such file: {weights}" in capsys.readouterr().err and "session" not in served
    weights.write_bytes(b"")
    assert demo.main(["--smoke", "--rarity-tpb-weights", str(weights)]) == 0
    assert served["session"]["tpb_weights"] == weights
