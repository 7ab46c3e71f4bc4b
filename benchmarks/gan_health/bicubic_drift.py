"""Colour drift (and PSNR-Y) of bicubic x4 on the photos of a folder, as validation measures them."""

import sys

import torch

from srkit.data.datasets import SRDataset
from srkit.evaluation import BicubicUpscaler, evaluate_generator

torch.set_num_threads(1)
dataset = SRDataset(hr_root=sys.argv[1], lr_root=None, scale=4, patch_size=None)
result = evaluate_generator(
    BicubicUpscaler(4), dataset, scale=4, device=torch.device("cpu"), colour_drift=True
)
print({k: round(v, 4) for k, v in result.metrics.items()})
for row in result.per_image:
    print(row["name"], {k: round(v, 3) for k, v in row.items() if k != "name"})
