"""The health warnings srkit's current HealthJudge gives on a run's logged figures (replay)."""

import json
import sys
from pathlib import Path

from srkit.config import HealthConfig
from srkit.train.services.health import HealthJudge

judge = HealthJudge(HealthConfig())
share = None
for line in Path(sys.argv[1]).read_text().splitlines():
    row = json.loads(line)
    if "health/generator/share/gan" in row:
        share = row["health/generator/share/gan"]
    prefix = "health/discriminator/"
    figures = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    if figures:
        for warning in judge.warnings("discriminator", figures, share):
            print(row["step"], warning[:160])
