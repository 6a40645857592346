"""Bench reports: the Rich table, ``results.json``, ``results.md`` and the contact sheet (PNG + HTML)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from colorize_cli.bench.runner import BenchResult, RunResult

from ..atomic import remove_stale_temps, temp_path_beside

# (summary key, column title, format, better) in display order; only computed ones are shown.
_QUALITY_COLUMNS = (
    ("psnr", "PSNR dB ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("deltae", "ΔE00 ↓", "{:.2f}"),
    ("cf", "CF", "{:.2f}"),
    ("delta_cf", "ΔCF ↓", "{:.2f}"),
    ("lpips", "LPIPS-alex ↓", "{:.4f}"),
    ("lpips_vgg", "LPIPS-vgg ↓", "{:.4f}"),
    ("dists", "DISTS ↓", "{:.4f}"),
    ("fid", "FID ↓", "{:.2f}"),
    ("kid", "KID×10³ ↓", "{:.2f}"),
)
_SPEED_COLUMNS = ("latency ms (med / p95)", "img/s", "peak MiB", "params M")
# What shared/data/README.md's evaluation protocol reports for every set (`--metrics` names).
PROTOCOL_METRICS = ("psnr", "ssim", "deltae", "cf", "lpips", "fid")
THUMB = 160  # contact sheet tile size (px, longest side)


def _fmt(key: str, value: float | None, template: str) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "∞"
    return template.format(value * 1000 if key == "kid" else value)


def _columns(result: BenchResult) -> list[tuple[str, str, str]]:
    present = {key for run in result.runs for key in run.summary}
    return [column for column in _QUALITY_COLUMNS if column[0] in present]


def _speed_cells(run: RunResult) -> list[str]:
    s = run.speed
    if run.baseline:  # a baseline is not a model: its "speed" is an array copy, meaningless beside one
        return ["–", "–", "–", "–"]
    if s.latency_median_s is None:
        latency = "–"
    else:
        latency = f"{s.latency_median_s * 1000:.1f} / {s.latency_p95_s * 1000:.1f}"
    return [
        latency,
        "–" if s.images_per_s is None else f"{s.images_per_s:.1f}",
        "–" if s.peak_memory_bytes is None else f"{s.peak_memory_bytes / 2**20:.0f}",
        f"{s.params / 1e6:.2f}",
    ]


def table_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the Rich and Markdown tables (truth row last, for CF)."""
    columns = _columns(result)
    header = ["model", "size", *[title for _, title, _ in columns], *_SPEED_COLUMNS]
    rows = []
    for run in result.runs:
        name = run.label + (" (baseline)" if run.baseline else "")
        rows.append([name, "–" if run.baseline else str(run.size or "–"), *[_fmt(k, run.summary.get(k), f) for k, _, f in columns], *_speed_cells(run)])
    if "cf" in result.truth_summary:
        truth = ["ground truth", "–", *["–"] * len(columns), *["–"] * len(_SPEED_COLUMNS)]
        truth[2 + [k for k, _, _ in columns].index("cf")] = f"{result.truth_summary['cf']:.2f}"
        rows.append(truth)
    return header, rows


def protocol_metrics_not_measured(result: BenchResult) -> list[str]:
    return [name for name in PROTOCOL_METRICS if name not in result.metrics]


def _caption(result: BenchResult) -> str:
    memory = {r.speed.memory_kind for r in result.runs}
    how = [f"{len(result.images)} images from {result.data_dir}", "input = L* of the truth, scored at the truth's size"]
    perceptual = [name for key, name in (("lpips", "LPIPS"), ("lpips-vgg", "LPIPS-VGG"), ("dists", "DISTS"))
                  if key in result.metrics]
    if perceptual:  # only what was measured
        how.append(f"{'/'.join(perceptual)} at 256×256")
    if {"fid", "kid"} & set(result.metrics):
        how.append("FID/KID TF-Inception pool3 at 299×299")
    how += ["latency: one image per call after a warm-up", f"memory: {', '.join(sorted(memory))}", f"seed {result.seed}"]
    missing = protocol_metrics_not_measured(result)
    if missing:  # the protocol asks for these on every set: say they are absent, not just leave them out
        how.append(f"not measured (the protocol asks for them): {', '.join(missing)}")
    return " · ".join(how)


def rich_table(result: BenchResult):
    """A ``rich.table.Table`` of the result (imported lazily: rich is only needed to print)."""
    from rich.table import Table

    header, rows = table_rows(result)
    table = Table(title="colorize bench", caption=_caption(result), caption_justify="left")
    for index, title in enumerate(header):
        table.add_column(title, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(result: BenchResult) -> str:
    header, rows = table_rows(result)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        _caption(result) + ".",
    ]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


# --- JSON --------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (e.g. PSNR of an exact match)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def environment() -> dict[str, str]:
    """Versions that change numbers."""
    import kornia
    import torch

    from colorize_cli import __version__

    return {
        "colorize": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "kornia": kornia.__version__,
        "platform": platform.platform(),
    }


def result_to_dict(result: BenchResult, command: Sequence[str] | None = None) -> dict[str, Any]:
    meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else list(sys.argv),
        "metrics_device": result.device,
        "versions": environment(),
        **result.meta,
    }
    runs = []
    for run in result.runs:
        runs.append(
            {
                "model": run.model,
                "label": run.label,
                "architecture": run.architecture,
                "baseline": run.baseline,
                "weights_sha256": run.weights_sha256,
                "sampler": run.sampler,
                "steps": run.steps,
                "size": run.size,
                "saturation": run.saturation,
                "seed": run.seed,
                "summary": run.summary,
                "speed": vars(run.speed),
                "per_image": run.per_image,
            }
        )
    return _clean(
        {
            "meta": meta,
            "protocol": {
                "input": "CIE L* of the ground truth as neutral grey sRGB (a*=b*=0), uint8",
                "scored_at": "ground truth size, 8-bit sRGB",
                "psnr": "RGB, dB; null where an output equals its truth (infinite: JSON has no infinity), "
                        "and a mean over such images is null too",
                "ssim": "per RGB channel, 7x7 uniform window, sample covariance (skimage default)",
                "deltae": "mean CIEDE2000, Lab D65 via kornia",
                "cf": "Hasler-Suesstrunk M3, signed, 0-255 RGB; delta_cf = |mean CF - mean CF(truth)|",
                "lpips": "v0.1 linear heads, inputs [-1,1], at 256x256",
                "dists": "VGG16 + L2 pooling, at 256x256",
                "fid_kid": "TF-Inception 2015-12-05 pool3, 299x299 bilinear; KID cubic kernel, 100 subsets "
                           "of 1000 images (one estimate over the whole set when it has fewer)",
                "latency": "wall time of one colorize_pixels call per image (batch 1), after one warm-up call",
            },
            "data_dir": result.data_dir,
            "images": result.images,
            "metrics": result.metrics,
            "protocol_metrics_not_measured": protocol_metrics_not_measured(result),
            "seed": result.seed,
            "truth": result.truth_summary,
            "runs": runs,
            "notes": result.notes,
        }
    )


# --- contact sheet -------------------------------------------------------------------------------


def _thumbnail(pixels: np.ndarray, size: int = THUMB) -> Image.Image:
    image = Image.fromarray(pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def contact_sheet_columns(result: BenchResult) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(title, {image key: pixels}) per column: grey input, each run, ground truth."""
    columns = [("input (grey)", {k: grey for k, (grey, _) in result.samples.items()})]
    columns += [(run.label, run.samples) for run in result.runs]
    columns.append(("ground truth", {k: truth for k, (_, truth) in result.samples.items()}))
    return columns


def contact_sheet_png(result: BenchResult, path: Path) -> None:
    keys = list(result.samples)
    columns = contact_sheet_columns(result)
    label_h, pad = 18, 4
    cell = THUMB + pad
    sheet = Image.new("RGB", (pad + cell * len(columns), label_h + pad + cell * max(len(keys), 1)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (title, images) in enumerate(columns):
        x = pad + c * cell
        draw.text((x, 3), title[:26], fill="black")
        for r, key in enumerate(keys):
            if key in images:
                thumb = _thumbnail(images[key])
                y = label_h + pad + r * cell
                sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
    _atomic_write(path, lambda handle: sheet.save(handle, format="PNG"))


def contact_sheet_html(result: BenchResult, path: Path) -> None:
    columns = contact_sheet_columns(result)

    def data_uri(pixels: np.ndarray) -> str:
        buffer = io.BytesIO()
        _thumbnail(pixels, 256).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in columns)
    body = []
    for key in result.samples:
        cells = "".join(
            f'<td><img src="{data_uri(images[key])}" alt="{html.escape(title)}"></td>' if key in images else "<td></td>"
            for title, images in columns
        )
        body.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    page = (
        "<!doctype html><meta charset=utf-8><title>colorize bench: contact sheet</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px;text-align:center;vertical-align:middle}"
        "img{max-width:256px;max-height:256px}</style>"
        f"<h1>colorize bench</h1><p>{html.escape(_caption(result))}</p>"
        f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>\n"
    )
    _atomic_write(path, lambda handle: handle.write(page.encode("utf-8", "backslashreplace")))


# --- all files -----------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:  # a failed write (a full disk, Ctrl-C) leaves no hidden file behind
        tmp.unlink(missing_ok=True)


def write_report(result: BenchResult, out_dir: str | Path, command: Sequence[str] | None = None) -> dict[str, Path]:
    """Write results.json, results.md, contact_sheet.png and contact_sheet.html into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "contact_png": out / "contact_sheet.png",
        "contact_html": out / "contact_sheet.html",
    }
    remove_stale_temps(paths.values())  # what a run killed mid-write (kill -9) left, once it is old
    document = json.dumps(result_to_dict(result, command), indent=1, allow_nan=False)
    _atomic_write(paths["json"], lambda handle: handle.write(document.encode("utf-8")))
    # (a file or folder name that is not UTF-8 reaches the text as surrogates: written escaped)
    _atomic_write(paths["markdown"], lambda handle: handle.write(markdown_table(result).encode("utf-8", "backslashreplace")))
    contact_sheet_png(result, paths["contact_png"])
    contact_sheet_html(result, paths["contact_html"])
    return paths
