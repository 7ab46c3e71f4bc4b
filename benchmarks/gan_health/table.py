"""Health and drift tables of a run's metrics.jsonl (markdown)."""

import json
import sys
from pathlib import Path

rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines()]
steps = [int(s) for s in sys.argv[2].split(",")]
health = {r["step"]: r for r in rows if "health/discriminator/logit_gap" in r}
val = {r["step"]: r for r in rows if "val_ema/psnr_y" in r}
keys = [
    "p_real",
    "p_fake",
    "accuracy",
    "logit_gap",
    "swap_gap",
    "swap_iou",
    "unswapped_iou",
    "grad_norm",
]
print(
    "| step | "
    + " | ".join(keys)
    + " | share gan / perceptual / pixel"
    + (" / colour" if any("health/generator/share/colour" in r for r in rows) else "")
    + " |"
)
print("|---" * (len(keys) + 2) + "|")
for s in steps:
    r = health[s]
    shares = [
        r.get(f"health/generator/share/{t}") for t in ("gan", "perceptual", "pixel", "colour")
    ]
    shares = " / ".join(f"{x:.3f}" for x in shares if x is not None)
    print(
        f"| {s} | "
        + " | ".join(f"{r['health/discriminator/' + k]:.3f}" for k in keys)
        + f" | {shares} |"
    )
print()
print("| step | PSNR-Y | SSIM-Y | colour_mean_de | colour_low_de |")
print("|---|---|---|---|---|")
for s, r in sorted(val.items()):
    print(
        f"| {s} | {r['val_ema/psnr_y']:.2f} | {r['val_ema/ssim_y']:.4f} | {r['val_ema/colour_mean_de']:.2f} | {r['val_ema/colour_low_de']:.2f} |"
    )
