"""What a demo run answers: the page's table, gallery and message, and the CSV rows, from hand-made results."""

from __future__ import annotations

from PIL import Image

from anomalib_adaclip.demo.results import TABLE_HEADERS, ImageResult, RunResult


def _scored(name: str, score: float, verdict: str, fraction: float | None) -> ImageResult:
    overlay = Image.new("RGB", (8, 4))
    return ImageResult(name, f"/uploads/{name}", "tire", score, verdict, fraction, overlay)


def test_table_rows_round_the_numbers_and_say_why_an_image_was_not_scored() -> None:
    scored = _scored("a.png", 0.734567, "NG", 0.0123456)
    scored.notes = ["EXIF orientation 6 is ignored.", "It is big."]
    refused = ImageResult("b.png", "/uploads/b.png", "tire", error="Not scored: not an image that PIL can read.")
    no_area = _scored("c.png", 0.25, "OK", float("nan"))
    assert len(TABLE_HEADERS) == 6
    assert scored.table_row() == ["a.png", "tire", 0.7346, "NG", 1.23, "EXIF orientation 6 is ignored. It is big."]
    assert refused.table_row() == ["b.png", "tire", "", "not scored", "", "Not scored: not an image that PIL can read."]
    assert no_area.table_row() == ["c.png", "tire", 0.25, "OK", "", ""]
    assert scored.scored and no_area.scored and not refused.scored


def test_csv_rows_hold_six_decimals_and_empty_cells_for_missing_numbers() -> None:
    assert _scored("a.png", 0.734567891, "NG", 0.0123456789).csv_row() == [
        "a.png",
        "tire",
        "0.734568",
        "NG",
        "0.012346",
    ]
    assert _scored("c.png", 0.5, "OK", float("nan")).csv_row() == ["c.png", "tire", "0.500000", "OK", ""]


def test_a_run_joins_its_messages_and_shows_only_scored_images_with_an_overlay() -> None:
    scored = _scored("a.png", 0.7346, "NG", 0.5)
    no_picture = ImageResult("d.png", "/uploads/d.png", "tire", 0.1, "OK", 0.0)
    refused = ImageResult("b.png", "/uploads/b.png", "tire", error="Not scored: too large.")
    run = RunResult(results=[scored, no_picture, refused], messages=["Built the model.", "Scored 2 of 3 image(s)."])
    assert run.message == "Built the model.\n\nScored 2 of 3 image(s)."
    assert run.gallery() == [(scored.overlay, "a.png: NG 0.735")]
    assert [row[0] for row in run.table()] == ["a.png", "d.png", "b.png"]
    assert RunResult().message == "" and RunResult().table() == [] and RunResult().k_shot == 0
