"""The cost of a sampler's diffusers scheduler per run: built fresh, and copied from the one Loom
keeps per configuration (``loom.runtime.sampling.schedulers``).

    .venv/bin/python bench/bench_schedulers.py

Prints, for a few samplers with SD's training schedule, the milliseconds of one construction
(``from_config``) and of one copy, each the median of 20.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loom.runtime import torchvision_fix  # noqa: E402

torchvision_fix.install()
from loom.runtime.sampling import schedulers  # noqa: E402

CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
          "beta_schedule": "scaled_linear"}


def median_ms(fn, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"{'sampler':<18}{'fresh ms':>10}{'copy ms':>10}")
    for name in ("euler", "dpmpp_2m", "uni_pc", "ddim", "dpm_2", "dpm_2_ancestral"):
        def fresh(name=name):
            schedulers._PROTOTYPES.clear()
            schedulers.make_scheduler(CONFIG, "epsilon", name, "normal")

        def copied(name=name):
            schedulers.make_scheduler(CONFIG, "epsilon", name, "normal")

        print(f"{name:<18}{median_ms(fresh):>10.2f}{median_ms(copied):>10.2f}")


if __name__ == "__main__":
    main()
