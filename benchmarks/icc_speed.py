"""Speed of applying a 16-bit scan's ICC profile (`colorize_cli/icc.py`) to a 10-MP image.

The profiles are the byte-built ProPhoto and Gray Gamma 2.2 profiles of tests/test_icc.py.

    python benchmarks/icc_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_icc import GREY_PROFILES, RGB_PROFILES  # noqa: E402

from colorize_cli import icc  # noqa: E402


def main() -> None:
    rgb = np.random.default_rng(0).integers(0, 65536, (2500, 4000, 3), dtype=np.uint16)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    cases = (("RGB, ProPhoto", rgb, RGB_PROFILES["prophoto"], False),
             ("grey, Gray Gamma 2.2", grey, GREY_PROFILES["gray-gamma-2.2"], True))
    for name, pixels, profile, one_channel in cases:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            icc.to_srgb16(pixels, profile, grey=one_channel, neutral=one_channel)
            times.append(time.perf_counter() - start)
        print(f"{name}, 10 MP: {min(times):.2f} / {sorted(times)[2]:.2f} s (min / median of 5)")


if __name__ == "__main__":
    main()
