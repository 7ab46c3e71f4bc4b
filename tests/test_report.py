"""The comparison report (``srkit compare``, ``srkit validate --report``): its numbers are
``srkit validate``'s, its pictures are the measured images, it is written atomically; and, in a
real headless Chromium, its table renders, its slider moves and shows the other image exactly
where the two differ, with no console error and no request leaving the file system."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium import Browser, find_browser
from srkit.cli import main
from srkit.data.io import read_rgb
from srkit.infer.report import METRICS, short_labels
from srkit.metrics.psnr_ssim import psnr
from srkit.nets.registry import build_network
from srkit.weights import save_weights

WIDTH, HEIGHT = 64, 48
FLAT_ROWS = 20  # HR rows 0..19 are one flat colour; rows 28.. are texture


def write_half_flat(path: Path, seed: int) -> None:
    """An HR image whose top is one flat colour (bicubic reproduces it exactly) and whose bottom
    is fine texture (bicubic blurs it): the two differ only in the bottom part."""
    rng = np.random.default_rng(seed)
    image = np.empty((HEIGHT, WIDTH, 3), np.float64)
    image[:] = (0.62, 0.45, 0.30)
    y, x = np.mgrid[0 : HEIGHT // 2, 0:WIDTH]
    stripes = 0.5 + 0.4 * np.sin(x * 2.1 + y * 0.7)[..., None] * rng.uniform(0.6, 1.0, 3)
    image[HEIGHT // 2 :] = stripes
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    for index in range(2):
        write_half_flat(root / "hr" / f"photo{index}.png", seed=index)
    models = []
    for name in ("esrgan", "spsr"):
        path = root / "runs" / name / "generator.safetensors"
        path.parent.mkdir(parents=True)
        save_weights(path, build_network("rrdb", nf=8, nb=1, gc=4, scale=2))
        models.append(path)
    report = root / "report"
    argv = ["compare", *map(str, models), "--hr", str(root / "hr"), "-o", str(report)]
    assert main(argv) == 0
    validate_csv = root / "validate.csv"
    argv = ["validate", *map(str, models), "--hr", str(root / "hr"), "--bicubic"]
    assert main([*argv, "--csv", str(validate_csv)]) == 0
    return {"root": root, "report": report, "models": models, "validate_csv": validate_csv}


class _Tables(HTMLParser):
    """Rows of every <table>: [(version key, label, {metric: (data-value, text, best)})]."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list] = []
        self.links: list[str] = []
        self._cell: dict | None = None
        self._row: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and "data-version" in attrs:
            self._row = [attrs["data-version"], "", {}]
            self.tables[-1].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {**attrs, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            cell, self._cell = self._cell, None
            if "data-metric" in cell:
                text = cell["text"].replace("★", "").strip()
                best = "best" in cell.get("class", "")
                self._row[2][cell["data-metric"]] = (float(cell["data-value"]), text, best)
            else:
                self._row[1] = cell["text"].strip()
        elif tag == "tr":
            self._row = None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_summary(rows: list, expected: list[dict[str, str]], labels: list[str]) -> None:
    """The summary table holds validate's means (bicubic first), the best of each column marked."""
    means = [r for r in expected if r["image"] == "mean"]
    assert [row[1] for row in rows] == labels
    assert [row[0] for row in rows] == ["bicubic", "m1", "m2"]
    metrics = [m for m in METRICS if m in rows[0][2]]
    assert metrics == ["psnr_y", "ssim_y"]
    for row, mean in zip(rows, means, strict=True):
        for metric in metrics:
            value, text, _ = row[2][metric]
            assert value == pytest.approx(float(mean[metric]), rel=1e-9, abs=1e-12)
            assert text == f"{value:.{METRICS[metric][3]}f}"
    for metric in metrics:
        values = [row[2][metric][0] for row in rows]
        best = max(values) if METRICS[metric][2] else min(values)
        assert [row[2][metric][2] for row in rows] == [v == best for v in values]


def test_report_holds_validates_numbers_and_the_measured_pictures(workspace):
    report = workspace["report"]
    assert sorted(p.name for p in report.iterdir()) == ["images", "index.html", "metrics.csv"]
    expected = _read_csv(workspace["validate_csv"])
    # The CSV beside the page is srkit validate's, row for row.
    assert _read_csv(report / "metrics.csv") == expected

    parser = _Tables()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    labels = ["bicubic", "esrgan/generator.safetensors", "spsr/generator.safetensors"]
    summary, *per_image = parser.tables
    _check_summary(summary, expected, labels)
    assert len(per_image) == 2
    for index, rows in enumerate(per_image):
        image_rows = [r for r in expected if r["image"] == f"photo{index}.png"]
        for row, record in zip(rows, image_rows, strict=True):
            assert row[2]["psnr_y"][0] == pytest.approx(float(record["psnr_y"]), abs=1e-9)

    # Everything the page refers to is a file beside it (or inline): no network.
    assert all(not re.match(r"^[a-z]+://|^//", link) for link in parser.links), parser.links
    assert {link for link in parser.links if link.startswith("images/")} == {
        f"images/{i:04d}-{key}.png" for i in range(2) for key in ("bicubic", "m1", "m2", "hr")
    }

    # The pictures are what was measured: HR is the HR file, and PSNR-Y of each saved SR
    # picture against it is the per-image number.
    for index in range(2):
        hr = read_rgb(workspace["root"] / "hr" / f"photo{index}.png")
        assert np.array_equal(read_rgb(report / "images" / f"{index:04d}-hr.png"), hr)
        for key, name in [("bicubic", "bicubic"), ("m1", str(workspace["models"][0]))]:
            sr = read_rgb(report / "images" / f"{index:04d}-{key}.png")
            record = next(
                r for r in expected if r["model"] == name and r["image"] == f"photo{index}.png"
            )
            assert psnr(sr, hr, crop_border=2) == pytest.approx(float(record["psnr_y"]), abs=1e-6)


def test_validate_report_writes_the_same_page(workspace, tmp_path, capsys):
    root = workspace["root"]
    argv = ["validate", *map(str, workspace["models"]), "--hr", str(root / "hr")]
    assert main([*argv, "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == [
        "bicubic",
        *map(str, workspace["models"]),
    ]
    ours = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    theirs = (workspace["report"] / "index.html").read_text(encoding="utf-8")
    assert re.sub(r"<ul class=\"facts\">.*?</ul>", "", ours) == re.sub(
        r"<ul class=\"facts\">.*?</ul>", "", theirs
    )


def test_a_failed_comparison_leaves_the_previous_report(workspace, tmp_path, monkeypatch):
    import shutil

    import srkit.evaluation as evaluation

    report = tmp_path / "report"
    shutil.copytree(workspace["report"], report)
    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    real = evaluation.evaluate_models

    def fail_halfway(*args, on_image=None, **kwargs):
        def count(model_index, *rest):
            on_image(model_index, *rest)
            if model_index == 1:
                raise RuntimeError("out of memory")

        return real(*args, on_image=count, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_models", fail_halfway)
    argv = ["compare", str(workspace["models"][0]), "--hr", str(workspace["root"] / "hr")]
    with pytest.raises(RuntimeError, match="out of memory"):
        main([*argv, "-o", str(report)])
    assert {p: p.read_bytes() for p in report.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging folder left


@pytest.mark.parametrize("command", ["compare", "validate"])
def test_report_folder_that_is_a_file_is_one_line(workspace, tmp_path, capsys, command):
    (tmp_path / "taken").write_text("a file")
    model, hr = str(workspace["models"][0]), str(workspace["root"] / "hr")
    option = "-o" if command == "compare" else "--report"
    assert main([command, model, "--hr", hr, option, str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"srkit: error: report folder '{tmp_path / 'taken'}' is a file, not a folder"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_best_marks_follow_each_metrics_direction():
    from srkit.infer.report import Version, _metrics_table

    versions = [Version("bicubic", "bicubic"), Version("m1", "a"), Version("m2", "b")]
    rows = [
        {"psnr_y": 30.0, "ssim_y": 0.80, "lpips": 0.40},
        {"psnr_y": 31.5, "ssim_y": 0.79, "lpips": 0.25},  # best PSNR and LPIPS (lower)
        {"psnr_y": 29.0, "ssim_y": 0.83, "lpips": 0.30},  # best SSIM
    ]
    parser = _Tables()
    parser.feed(_metrics_table(versions, rows, ["psnr_y", "ssim_y", "lpips"], "metrics"))
    marked = {
        metric: [row[0] for row in parser.tables[0] if row[2][metric][2]]
        for metric in ("psnr_y", "ssim_y", "lpips")
    }
    assert marked == {"psnr_y": ["m1"], "ssim_y": ["m2"], "lpips": ["m1"]}
    assert parser.tables[0][1][2]["lpips"][1] == "0.2500"


def test_lpips_column_when_its_weights_are_given(workspace, tmp_path):
    from vgg_weights import write_random_lpips_lin, write_random_vgg

    lin = write_random_lpips_lin(tmp_path / "lin.pth")
    vgg = write_random_vgg(tmp_path / "vgg16.pth")
    argv = ["compare", str(workspace["models"][0]), "--hr", str(workspace["root"] / "hr")]
    argv += ["--lpips", str(lin), "--lpips-vgg", str(vgg), "-o", str(tmp_path / "report")]
    assert main(argv) == 0
    parser = _Tables()
    parser.feed((tmp_path / "report" / "index.html").read_text(encoding="utf-8"))
    rows = parser.tables[0]
    assert list(rows[0][2]) == ["psnr_y", "ssim_y", "lpips"]
    values = [row[2]["lpips"][0] for row in rows]
    assert [row[2]["lpips"][2] for row in rows] == [v == min(values) for v in values]
    assert "LPIPS" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "LPIPS (VGG, v0.1)" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")


def test_short_labels_tell_models_apart():
    assert short_labels(["a/b/run1/checkpoints/step_1", "a/b/run2/checkpoints/step_1"]) == [
        "run1/checkpoints/step_1",
        "run2/checkpoints/step_1",
    ]
    assert short_labels(["/x/esrgan.pth", "/y/spsr.pth"]) == ["x/esrgan.pth", "y/spsr.pth"]
    assert short_labels(["model.pth"]) == ["model.pth"]


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium or Chrome found (install Debian's 'chromium' package, or set "
    "SRKIT_BROWSER to the executable); the report's browser test is skipped",
)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _same(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels of two screenshots or pictures that agree within one level."""
    return float((np.abs(a - b).max(axis=2) <= 1).mean())


def _enlarged(path: Path, factor: int) -> np.ndarray:
    """The picture as the page draws it: each pixel an exact factor x factor square."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


@needs_browser
def test_report_in_headless_chromium(workspace):
    report = workspace["report"]
    expected = _read_csv(workspace["validate_csv"])
    with Browser(BROWSER) as browser:
        page = browser.open((report / "index.html").as_uri(), width=1200, height=1000)
        page.wait_until("document.documentElement.dataset.ready === 'true'")

        # 1. The metrics table, as rendered.
        rows = page.evaluate(
            """Array.from(document.querySelectorAll('#metrics tbody tr')).map(row => [
                 row.dataset.version,
                 row.querySelector('th').textContent.trim(),
                 Object.fromEntries(Array.from(row.querySelectorAll('td')).map(cell => [
                   cell.dataset.metric,
                   [Number(cell.dataset.value), cell.textContent.replace('★', '').trim(),
                    cell.classList.contains('best') && !!cell.querySelector('.best-mark')]]))])"""
        )
        labels = ["bicubic", "esrgan/generator.safetensors", "spsr/generator.safetensors"]
        _check_summary(
            [[k, label, {m: tuple(v) for m, v in cells.items()}] for k, label, cells in rows],
            expected,
            labels,
        )
        assert page.evaluate(
            "getComputedStyle(document.querySelector('#metrics td.best')).fontWeight"
        ) in ("600", "700")

        # 2. The first image's slider: bicubic on the left, HR on the right (chosen in the page).
        page.evaluate(
            """(() => { const pick = document.querySelector('#image-0 .pick-right');
                        pick.value = 'hr'; pick.dispatchEvent(new Event('change')); })()"""
        )
        page.wait_until(
            "document.querySelector('#image-0 img.right').complete && "
            "document.querySelector('#image-0 img.right').src.endsWith('0000-hr.png') && "
            "document.querySelector('#image-0 .tag-right').textContent === 'HR'"
        )
        box = page.evaluate(
            "(() => { const b = document.querySelector('#image-0 .compare').getBoundingClientRect();"
            " return [b.left, b.top, b.width, b.height, window.scrollY]; })()"
        )
        left, top, width, height, scroll = box
        assert scroll == 0 and (width, height) == (WIDTH * 8, HEIGHT * 8)  # enlarged 8x
        clip = {"x": left, "y": top, "width": width, "height": height}
        y = top + height * 0.2  # in the flat part, where the two pictures agree

        page.mouse("moved", left + width * 0.5, y)  # hovering also moves the crops' spot here
        before = _pixels(page.screenshot(clip))
        page.mouse("pressed", left + width * 0.5, y)
        for fraction in (0.45, 0.35, 0.25, 0.2):
            page.mouse("moved", left + width * fraction, y, pressed=True)
        page.mouse("released", left + width * 0.2, y)
        after = _pixels(page.screenshot(clip))
        assert (
            page.evaluate(
                "document.querySelector('#image-0 .compare').getAttribute('aria-valuenow')"
            )
            == "20"
        )

        bicubic = _enlarged(report / "images" / "0000-bicubic.png", 8)
        hr = _enlarged(report / "images" / "0000-hr.png", 8)
        # The page shows the pictures pixel for pixel: left of the divider bicubic, right HR
        # (but for the name tags and the crops' lens drawn over them).
        assert _same(before[:, 300:], hr[:, 300:]) > 0.97
        assert _same(before[:, :240], bicubic[:, :240]) > 0.95
        assert _same(after[:, 110:], hr[:, 110:]) > 0.95
        assert _same(after[:, :240], bicubic[:, :240]) < 0.8  # the slider did move

        change = np.abs(after - before).max(axis=2)
        differ = np.abs(bicubic - hr).max(axis=2) > 8
        swept = np.zeros_like(differ)
        swept[:, 110:250] = True  # between the old divider (256) and the new one (102)
        # Nothing changes outside the swept band...
        outside = np.ones_like(differ)
        outside[:, 96:262] = False
        assert change[outside].max() <= 2
        # ... nor inside it where bicubic and HR agree (the flat top; the lens drawn there is the
        # same in both screenshots) ...
        assert change[: FLAT_ROWS * 8, 110:250].max() <= 2
        # ... and inside it, the screenshot changes where the two pictures differ.
        assert (change[swept & differ] > 8).mean() > 0.95
        assert differ[swept].mean() > 0.3  # the texture is a good part of the band

        # 3. The zoomed crops follow the pointer together (same image point in every crop).
        page.mouse("moved", left + width * 0.75, top + height * 0.75)
        offsets = page.evaluate(
            "Array.from(document.querySelectorAll('#image-0 .crop img')).map(i => [i.style.left, i.style.top])"
        )
        zoom = int(page.evaluate("document.querySelector('#image-0 .zoom').value"))
        assert zoom == 16 and len(offsets) == 4 and len({tuple(o) for o in offsets}) == 1
        # The crop window is 160 px: the point sits at its centre. The pointer lands on whole
        # screen pixels (one is 1/8 image pixel here, 2 crop pixels at zoom 16).
        shift = [float(value.removesuffix("px")) for value in offsets[0]]
        assert shift == pytest.approx([80 - 0.75 * WIDTH * zoom, 80 - 0.75 * HEIGHT * zoom], abs=2)

        # 4. No console error, no failed load, nothing requested from outside the file system.
        assert page.problems() == []
        urls = page.requested_urls()
        assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
