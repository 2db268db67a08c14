"""``anomalib-adaclip prompts``: the exact sentences of a class name, and which rule names the class of an image."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_adaclip import cli
from tests.helpers import OWN_PROMPTS, OWN_SENTENCES


def test_prompts_command_prints_the_exact_sentences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cli.dispatch.print_commands()
    assert {"calibrate", "prompts"} <= set(cli.COMMANDS) and "calibrate" in capsys.readouterr().out
    assert cli.main(["prompts", "--class-name", "metal-nut"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# class name 'metal-nut' -> prompt text 'metal nut'; the paper's prompts"
    assert lines[1:3] == ["normal (28 sentences):", "  a bad photo of a metal nut."]
    assert lines[29] == "  a cropped photo of the metal nut without damage."
    assert lines[30:32] == ["abnormal (20 sentences):", "  a bad photo of a damaged metal nut."]
    assert lines[-1] == "  a cropped photo of the metal nut with damage."

    config = tmp_path / "cfg.yaml"
    init_args = {"prompts": OWN_PROMPTS, "classes": {"map": {"nuts": "metal-nut"}}, "checkpoint": "mvtec_colondb"}
    config.write_text(yaml.safe_dump({"model": {"class_path": "AdaCLIP", "init_args": init_args}}))
    assert cli.main(["prompts", "--config", str(config), "--image", "/data/nuts/1.png", "--image", "/x/2.png"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "/data/nuts/1.png -> class name 'metal-nut' (folder 'nuts' of classes.map)",
        "/x/2.png -> class name 'object' (no rule matches: the run's class name)",
        "# class name 'metal-nut' -> prompt text 'metal nut'; own prompts (not the paper's)",
        "normal (2 sentences):",
        *(f"  {sentence}" for sentence in OWN_SENTENCES[0]),
        "abnormal (1 sentences):",
        *(f"  {sentence}" for sentence in OWN_SENTENCES[1]),
        "# class name 'object' -> prompt text 'object'; own prompts (not the paper's)",
        "normal (2 sentences):",
        "  a photo of a object.",
        "  a photo of a good object.",
        "abnormal (1 sentences):",
        "  a photo of a bad object.",
    ]
    assert "released checkpoints were trained with the paper's prompts" in captured.err
    assert cli.main(["prompts", "--model.prompts.templates", '["no placeholder"]']) == 2
    assert "needs exactly one '{}' placeholder" in capsys.readouterr().err
