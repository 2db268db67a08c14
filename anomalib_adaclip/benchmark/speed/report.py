"""The speed benchmark's report as text: the header, the torch rows, then each mode's and runtime's own lines."""

from __future__ import annotations

from typing import Any

from anomalib_adaclip.benchmark.speed.few_shot import format_few_shot
from anomalib_adaclip.benchmark.speed.measure import SECTIONS, gigabytes
from anomalib_adaclip.benchmark.speed.mutual import format_mutual
from anomalib_adaclip.benchmark.speed.online import format_online
from anomalib_adaclip.benchmark.speed.runtimes import format_runtimes

__all__ = ["format_report"]


def format_report(report: dict[str, Any]) -> str:
    """The report as text."""
    backbone = report["backbone"] if isinstance(report["backbone"], str) else "custom config"
    model = "HSF " + ("on" if report["hsf"] else "off")
    if "online" in report:
        model = "RareCLIP's online rarity scoring"
    lines = [
        f"AdaCLIP speed: {backbone} @ {report['image_size']} px, {report['precision']}, {model}, random weights",
        f"device: {report['device']} ({report['device_name']}"
        + (f", CPU kernels {report['cpu_capability']}" if report.get("cpu_capability") else "")
        + f"), {report['torch_threads']} torch threads, torch {report['torch_version']}",
    ]
    if report.get("load_average"):
        before = ", ".join(f"{value:.2f}" for value in report["load_average"])
        after = ", ".join(f"{value:.2f}" for value in report.get("load_average_after") or [])
        lines.append(f"load average (1, 5, 15 min): {before} before, {after} after ({report['cpu_count']} CPUs)")
    if report.get("memory_before_model_bytes") is not None:
        kind = "allocated" if report["device"].startswith("cuda") else "resident"
        lines.append(
            f"memory {kind}: {gigabytes(report['memory_before_model_bytes'])} before building the model, "
            f"{gigabytes(report['memory_with_model_bytes'])} with it"
        )
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    lines.append("")
    if "runtimes" in report:
        lines.extend(format_runtimes(report))
        return "\n".join(lines)
    if "online" in report:
        lines.extend(format_online(report["online"]))
        return "\n".join(lines)
    lines.append(
        f"{'batch':>5} {'images':>6} {'images/s':>9} {'s/image':>8} {'median s/image':>14} {'CPU s/image':>11} "
        f"{'peak memory':>12}"
    )
    for result in report["results"]:
        lines.append(
            f"{result['batch_size']:>5} {result['images']:>6} {result['images_per_second']:>9.3f} "
            f"{result['seconds_per_image']:>8.3f} {result['median_seconds_per_image']:>14.3f} "
            f"{result['cpu_seconds_per_image']:>11.3f} "
            f"{gigabytes(result['peak_memory_bytes']):>12}  ({gigabytes(result['peak_memory_per_image_bytes'])}"
            f" per image, {result['memory_kind']})"
        )
    if "speedup_over_batch1" in report:
        lines.append(f"batch {report['results'][0]['batch_size']} vs batch 1: {report['speedup_over_batch1']:.2f}x")
    if "mutual" in report:
        lines.extend(format_mutual(report["mutual"]))
    if "few_shot" in report:
        lines.extend(format_few_shot(report))
    if "profile_seconds_per_batch" in report:
        times = report["profile_seconds_per_batch"]
        total = times["total"] or 1.0
        lines.append("")
        profiled = f", k_shot={report['few_shot']['k_shot']}" if "few_shot" in report else ""
        lines.append(f"time per batch of {report['profile_batch_size']}{profiled} (under the profiler):")
        for section in (*SECTIONS, "other", "total"):
            lines.append(f"  {section:<16} {times[section]:>9.3f} s  {100 * times[section] / total:>5.1f}%")
    return "\n".join(lines)
