"""Take a screenshot of a comparison report page (``srkit compare``) in headless Chromium.

    python scripts/report_screenshot.py REPORT_DIR/index.html docs/compare-report.png

Opens the page through ``tests/chromium.py`` (the DevTools protocol on a pipe; needs a Chromium,
e.g. Debian's ``chromium`` package), points at ``--spot`` of the first image so the zoomed crops
show that spot, drags its slider to ``--slider``, and saves the top ``--height`` pixels of a
``--width``-wide window (``--right`` picks the slider's right-hand version first). A PNG
larger than ``--max-kb`` is reduced to 256 colours.

docs/compare-report.png was made this way from the quickstart (README command 1: its five
held-out photos and the EMA generators of steps 1200 and 1800, copied to short names)::

    cp experiments/quickstart/checkpoints/step_00001200/generator_ema.safetensors /tmp/quickstart_1200.safetensors
    cp experiments/quickstart/checkpoints/step_00001800/generator_ema.safetensors /tmp/quickstart_1800.safetensors
    srkit compare /tmp/quickstart_1200.safetensors /tmp/quickstart_1800.safetensors \\
        --hr data/quickstart/val -o /tmp/report
    python scripts/report_screenshot.py /tmp/report/index.html docs/compare-report.png \\
        --spot 0.42,0.35 --right m2
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from chromium import Browser, find_browser  # noqa: E402


def fractions(text: str) -> tuple[float, float]:
    x, y = (float(part) for part in text.split(","))
    return x, y


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the report's index.html")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=980)
    parser.add_argument("--slider", type=float, default=0.45, help="slider position, 0-1")
    parser.add_argument(
        "--spot", type=fractions, default=(0.5, 0.5), help="crop spot 'x,y' in image fractions"
    )
    parser.add_argument("--right", help="version on the slider's right: m1, m2, ... or hr")
    parser.add_argument("--max-kb", type=int, default=290)
    args = parser.parse_args()

    browser_path = find_browser()
    if browser_path is None:
        print("no Chromium found (install 'chromium' or set SRKIT_BROWSER)", file=sys.stderr)
        return 1
    from PIL import Image

    with Browser(browser_path) as browser:
        page = browser.open(args.page.resolve().as_uri(), args.width, args.height)
        page.wait_until("document.documentElement.dataset.ready === 'true'")
        if args.right:
            page.evaluate(
                f"(() => {{ const pick = document.querySelector('.pick-right');"
                f" pick.value = {args.right!r}; pick.dispatchEvent(new Event('change')); }})()"
            )
            page.wait_until("document.querySelector('img.right').complete")
        left, top, width, height = page.evaluate(
            "(() => { const b = document.querySelector('.compare').getBoundingClientRect();"
            " return [b.left, b.top, b.width, b.height]; })()"
        )
        y = top + height * args.spot[1]
        page.mouse("moved", left + width * args.spot[0], y)
        page.mouse("pressed", left + width * 0.5, y)
        page.mouse("moved", left + width * args.slider, y, pressed=True)
        page.mouse("released", left + width * args.slider, y)
        page.mouse("moved", args.width - 5, 5)  # park the pointer off the picture
        page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
        image = page.screenshot({"x": 0, "y": 0, "width": args.width, "height": args.height})
        problems = page.problems()
    if problems:
        print("the page reported problems: " + "; ".join(problems), file=sys.stderr)
        return 1
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    if buffer.tell() > args.max_kb * 1024:
        buffer = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buffer, "PNG", optimize=True
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(buffer.getvalue())
    print(f"wrote {args.output} ({buffer.tell() // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
