"""The comparison report: one HTML page that compares models on a folder of HR images.

``srkit compare MODEL... --hr HR_DIR [--lr LR_DIR] -o REPORT_DIR`` (and ``srkit validate ...
--report REPORT_DIR``) writes::

    REPORT_DIR/index.html    the page: CSS and JavaScript inline, no network, no server
    REPORT_DIR/images/       every image shown, as PNG (bicubic, each model, HR)
    REPORT_DIR/metrics.csv   every image's numbers and the means (as ``srkit validate --csv``)

Open ``index.html`` from the file system (a ``file://`` URL) in any browser. The page shows

* the metrics table: the mean PSNR/SSIM (Y channel by default) and LPIPS (when its weights are
  given) of bicubic (the floor) and of each model, the best value of each column marked;
* per image, a before/after slider between any two of bicubic / each model / HR (drag it, or
  focus it and use the arrow keys), zoomed crops of every version at the same spot (the spot
  follows the pointer over the slider; the zoom is selectable), and the image's own metrics.

The numbers are those of ``srkit validate`` (:func:`srkit.evaluation.evaluate_models`) and the
pictures are exactly the images they were computed on (SR clamped and rounded to 8 bits). The
report is staged in a hidden folder beside ``REPORT_DIR`` and moved into place when complete,
so a failed run leaves the previous report as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from srkit.errors import SrkitError

#: File names inside the report folder.
PAGE = "index.html"
IMAGES = "images"
CSV = "metrics.csv"

#: metric key -> (column title, unit, higher is better, decimals shown).
METRICS: dict[str, tuple[str, str, bool, int]] = {
    "psnr_y": ("PSNR-Y", "dB", True, 2),
    "ssim_y": ("SSIM-Y", "", True, 4),
    "psnr_rgb": ("PSNR-RGB", "dB", True, 2),
    "ssim_rgb": ("SSIM-RGB", "", True, 4),
    "lpips": ("LPIPS", "", False, 4),
}

#: Images narrower than this are shown enlarged by a whole factor (pixels stay sharp squares).
ENLARGE_BELOW = 512


@dataclass(frozen=True)
class Version:
    """One picture of each image: bicubic, a model, or HR."""

    key: str  # file-name safe: "bicubic", "m1", "m2", ..., "hr"
    label: str  # shown on the page
    source: str = ""  # the full model path (a tooltip), empty for bicubic and HR


def short_labels(names: Sequence[str]) -> list[str]:
    """Labels for model paths: their last two path components, or as many more as it takes to
    tell them apart (``runs/esrgan/checkpoints/step_00005000`` -> ``checkpoints/step_00005000``,
    or ``esrgan/checkpoints/step_00005000`` next to an SPSR run's)."""
    parts = [Path(name).parts for name in names]
    longest = max((len(p) for p in parts), default=1)
    for count in range(2, longest + 1):
        labels = ["/".join(p[-count:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(name) for name in names]


def image_file(index: int, key: str) -> str:
    """The report-relative path of version ``key`` of image ``index``."""
    return f"{IMAGES}/{index:04d}-{key}.png"


def check_report_folder(folder: Path) -> None:
    """A user error unless ``folder`` can hold a report (absent, or a folder)."""
    if folder.exists() and not folder.is_dir():
        raise SrkitError(f"report folder '{folder}' is a file, not a folder")


class ReportWriter:
    """Collects the pictures during evaluation (in a hidden staging folder), then writes the page
    and moves everything into ``folder``.

    Use as a context manager: leaving it with an exception deletes the staging folder.
    """

    def __init__(self, folder: Path, versions: Sequence[Version]) -> None:
        self.folder = Path(folder)
        self.versions = list(versions)
        self.sizes: dict[int, tuple[int, int]] = {}
        self.names: dict[int, str] = {}
        self.staging: Path | None = None

    def __enter__(self) -> ReportWriter:
        check_report_folder(self.folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(
            tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}.")
        )
        (self.staging / IMAGES).mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    def add(self, key: str, index: int, item: dict[str, Any], image: Any) -> None:
        """Save version ``key`` of dataset image ``index`` ((1, 3, H, W) or (3, H, W) in [0, 1])."""
        import numpy as np
        from PIL import Image

        assert self.staging is not None, "use ReportWriter as a context manager"
        tensor = image[0] if image.dim() == 4 else image
        pixels = (tensor.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))
        Image.fromarray(pixels).save(self.staging / image_file(index, key), compress_level=3)
        self.sizes[index] = (pixels.shape[1], pixels.shape[0])
        self.names[index] = str(item.get("name", index))

    def finish(self, results: Sequence[tuple[str, Any]], facts: dict[str, str]) -> Path:
        """Write the page and the CSV for ``results`` (one per version but HR, in order) and move
        the report into place; returns the page's path."""
        from srkit.evaluation import quality_csv

        assert self.staging is not None
        page = render_page(self.versions, results, self.names, self.sizes, facts)
        (self.staging / PAGE).write_text(page, encoding="utf-8")
        (self.staging / CSV).write_text(quality_csv(results), encoding="utf-8")
        self._move_into_place()
        return self.folder / PAGE

    def _move_into_place(self) -> None:
        """Replace the report's files in ``folder`` (other files there are left alone); the page
        comes last, so a page never refers to images that are not there."""
        assert self.staging is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        old_images = self.folder / IMAGES
        if old_images.exists():
            trash = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}."))
            os.replace(old_images, trash / IMAGES)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.staging / IMAGES, old_images)
        os.replace(self.staging / CSV, self.folder / CSV)
        os.replace(self.staging / PAGE, self.folder / PAGE)
        with contextlib.suppress(OSError):
            self.staging.rmdir()


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("srkit.infer") / "report_page" / name).read_text(encoding="utf-8")


def _columns(results: Sequence[tuple[str, Any]]) -> list[str]:
    present = set(results[0][1].metrics)
    return [key for key in METRICS if key in present]


def _best(values: dict[str, float], metric: str) -> set[str]:
    """The keys whose value is the best of ``values`` for ``metric`` (ties all count)."""
    finite = {k: v for k, v in values.items() if v == v}  # NaN never wins
    if not finite:
        return set()
    higher = METRICS[metric][2]
    target = max(finite.values()) if higher else min(finite.values())
    return {k for k, v in finite.items() if v == target}


def _format(metric: str, value: float) -> str:
    if value != value:
        return "–"
    if value == float("inf"):
        return "∞"
    return f"{value:.{METRICS[metric][3]}f}"


def _metrics_table(
    versions: Sequence[Version],
    rows: Sequence[dict[str, float]],
    columns: Sequence[str],
    table_class: str,
    table_id: str | None = None,
) -> str:
    """An HTML table: one row per version, one column per metric, the best per column marked."""
    best = {
        m: _best({v.key: row[m] for v, row in zip(versions, rows, strict=True)}, m) for m in columns
    }
    head = "".join(
        f'<th scope="col" data-metric="{m}">{METRICS[m][0]}'
        + (f" ({METRICS[m][1]})" if METRICS[m][1] else "")
        + f' <span class="direction">{"↑" if METRICS[m][2] else "↓"}</span></th>'
        for m in columns
    )
    body = []
    for version, row in zip(versions, rows, strict=True):
        cells = []
        for m in columns:
            value = float(row[m])
            is_best = version.key in best[m]
            mark = (
                ' <span class="best-mark" title="best in this column">★</span>' if is_best else ""
            )
            cells.append(
                f'<td data-metric="{m}" data-value="{value!r}"'
                + (' class="best"' if is_best else "")
                + f">{_format(m, value)}{mark}</td>"
            )
        body.append(
            f'<tr data-version="{version.key}"><th scope="row"{_tooltip(version)}>'
            f"{html.escape(version.label)}</th>" + "".join(cells) + "</tr>"
        )
    id_attribute = f' id="{table_id}"' if table_id else ""
    return (
        f'<table class="{table_class}"{id_attribute}><thead><tr><th scope="col">model</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _tooltip(version: Version) -> str:
    return f' title="{html.escape(version.source)}"' if version.source else ""


def _options(versions: Sequence[Version], selected: str) -> str:
    return "".join(
        f'<option value="{v.key}"{" selected" if v.key == selected else ""}>'
        f"{html.escape(v.label)}</option>"
        for v in versions
    )


def _zoom_options(enlarge: int) -> str:
    """The crops' zoom choices, in image pixels per image pixel; the default magnifies twice as
    much as the (possibly enlarged) slider view, at least 4x."""
    default = max(4, 2 * enlarge)
    choices = sorted({2, 4, 8, 16, default})
    return "".join(
        f'<option value="{z}"{" selected" if z == default else ""}>{z}×</option>' for z in choices
    )


def _image_section(
    index: int,
    name: str,
    size: tuple[int, int],
    versions: Sequence[Version],
    right: str,
    table: str,
) -> str:
    """One image: the two pickers, the slider, the crops and the image's metrics."""
    width, height = size
    enlarge = max(1, ENLARGE_BELOW // width)
    labels = {v.key: v.label for v in versions}
    files = {v.key: image_file(index, v.key) for v in versions}
    crops = "".join(
        f'<figure class="crop" data-version="{v.key}"><div class="window">'
        f'<img src="{files[v.key]}" alt="{html.escape(v.label)}, zoomed" draggable="false">'
        f"</div><figcaption{_tooltip(v)}>{html.escape(v.label)}</figcaption></figure>"
        for v in versions
    )
    pixelated = " pixelated" if enlarge > 1 else ""
    return f"""<section class="image" id="image-{index}" data-image="{index}">
<h2>{html.escape(name)} <small>{width}×{height}</small></h2>
<div class="controls">
<label>left <select class="pick-left">{_options(versions, "bicubic")}</select></label>
<label>right <select class="pick-right">{_options(versions, right)}</select></label>
<label>zoom <select class="zoom">{_zoom_options(enlarge)}</select></label>
</div>
<div class="stage">
<div class="compare{pixelated}" role="slider" tabindex="0" aria-valuemin="0" aria-valuemax="100"
 aria-valuenow="50" aria-label="before/after slider: drag it, or use the arrow keys"
 style="width: {width * enlarge}px">
<img class="right" src="{files[right]}" width="{width}" height="{height}" alt="right image" draggable="false">
<img class="left" src="{files["bicubic"]}" width="{width}" height="{height}" alt="left image" draggable="false">
<div class="divider"></div><div class="lens"></div>
<span class="tag tag-left">{html.escape(labels["bicubic"])}</span>
<span class="tag tag-right">{html.escape(labels[right])}</span>
</div>
<div class="crops">{crops}</div>
</div>
{table}
</section>
"""


def render_page(
    versions: Sequence[Version],
    results: Sequence[tuple[str, Any]],
    names: dict[int, str],
    sizes: dict[int, tuple[int, int]],
    facts: dict[str, str],
    title: str = "srkit comparison",
) -> str:
    """The report page as one HTML string.

    Args:
        versions: every picture of an image, in display order: bicubic, the models, HR last.
        results: (name, :class:`~srkit.evaluation.EvaluationResult`) for each version but HR.
        names, sizes: image index -> name / (width, height) of the HR image.
        facts: shown under the title (label -> text), e.g. the HR folder and the scale.
    """
    scored = versions[: len(results)]
    columns = _columns(results)
    summary = _metrics_table(
        scored, [r.metrics for _, r in results], columns, "metrics", table_id="metrics"
    )
    # The slider starts on bicubic | the best model by the first metric (HR if none beats it).
    first = {v.key: r.metrics[columns[0]] for v, (_, r) in zip(scored, results, strict=True)}
    best = _best(first, columns[0])
    right = next((v.key for v in scored[1:] if v.key in best), versions[-1].key)
    data = {"versions": [{"key": v.key, "label": v.label} for v in versions], "images": []}
    sections, navigation = [], []
    for index in sorted(names):
        width, height = sizes[index]
        files = {v.key: image_file(index, v.key) for v in versions}
        data["images"].append(
            {"name": names[index], "width": width, "height": height, "files": files}
        )
        rows = [result.per_image[index] for _, result in results]
        table = _metrics_table(scored, rows, columns, "per-image")
        sections.append(_image_section(index, names[index], sizes[index], versions, right, table))
        navigation.append(f'<li><a href="#image-{index}">{html.escape(names[index])}</a></li>')
    fact_items = "".join(
        f"<li><b>{html.escape(k)}</b> {html.escape(v)}</li>" for k, v in facts.items()
    )
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    count = f"{len(names)} image{'s' if len(names) != 1 else ''}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>
{_asset("report.css")}
</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<ul class="facts">{fact_items}</ul>
</header>
<main>
<section class="summary">
<h2>Mean over {count}</h2>
{summary}
<p class="note">★ best in each column (↑ higher is better, ↓ lower is better); bicubic is the
floor. Every image's numbers: <a href="{CSV}">{CSV}</a>.</p>
<ol class="index">{"".join(navigation)}</ol>
</section>
{"".join(sections)}</main>
<script type="application/json" id="report-data">{payload}</script>
<script>
{_asset("report.js")}
</script>
</body>
</html>
"""


# --------------------------------------------------------------------------------------------
# Running a comparison
# --------------------------------------------------------------------------------------------


def model_versions(names: Sequence[str]) -> list[Version]:
    """bicubic, one version per model name (keys m1, m2, ...), HR."""
    labels = short_labels(names)
    return [
        Version("bicubic", "bicubic"),
        *(
            Version(f"m{i}", label, source=name)
            for i, (label, name) in enumerate(zip(labels, names, strict=True), start=1)
        ),
        Version("hr", "HR"),
    ]


def write_report(
    folder: Path,
    models: Sequence[tuple[str, Any]],
    dataset: Any,
    scale: int,
    device: Any,
    crop_border: int | None = None,
    y_channel: bool = True,
    lpips: Any = None,
    facts: dict[str, str] | None = None,
) -> tuple[list[tuple[str, Any]], Path]:
    """Evaluate ``models`` (bicubic first) on ``dataset`` and write the report into ``folder``.

    Returns the evaluation results (as :func:`srkit.evaluation.evaluate_models`) and the page's
    path.
    """
    from srkit.evaluation import evaluate_models

    if not models or models[0][0] != "bicubic":
        raise ValueError("the first model of a report is bicubic")
    versions = model_versions([name for name, _ in models[1:]])
    with ReportWriter(folder, versions) as writer:

        def keep(model_index: int, image_index: int, item: dict[str, Any], sr: Any) -> None:
            writer.add(versions[model_index].key, image_index, item, sr)
            if model_index == 0:
                writer.add("hr", image_index, item, item["hr"])

        results = evaluate_models(
            models,
            dataset,
            scale=scale,
            device=device,
            crop_border=crop_border,
            y_channel=y_channel,
            lpips=lpips,
            on_image=keep,
        )
        for name, result in results:
            if not any(key in result.metrics for key in METRICS):
                raise SrkitError(
                    f"'{name}' does not output images the size of HR; it cannot be compared"
                )
        page = writer.finish(results, facts or {})
    return results, page


def report_facts(
    hr: Path, lr: Path | None, scale: int, crop: int, y_channel: bool, lpips: bool
) -> dict[str, str]:
    """The lines under the report's title."""
    from srkit import __version__

    return {
        "HR": str(hr),
        "LR": str(lr) if lr else f"made from HR (MATLAB-compatible bicubic, x{scale} down)",
        "metrics": f"{'Y (BT.601)' if y_channel else 'RGB'}, {crop} px border cropped"
        + (", LPIPS (VGG, v0.1)" if lpips else ""),
        "made": f"{datetime.date.today().isoformat()} by srkit {__version__}",
    }
