"""A box of grey test scans for timing `colorize batch`: scikit-image's photos made grey, enlarged
to 4000×3000 (12 MP) with a film grain (sigma 4 levels, seeded), saved as JPEG (quality 92).

    python benchmarks/make_scan_box.py box12 && /usr/bin/time colorize batch box12 -o out -q

The photos ship with scikit-image under public-domain or CC0 terms (camera, astronaut, coffee,
rocket, chelsea, immunohistochemistry, cat, hubble_deep_field).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = ("camera", "astronaut", "coffee", "rocket", "chelsea", "immunohistochemistry", "cat", "hubble_deep_field")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of every scan")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate(PHOTOS):
        grey = Image.fromarray(getattr(skimage.data, name)()).convert("L").resize((width, height), Image.LANCZOS)
        grain = rng.normal(0.0, 4.0, (height, width))
        scan = np.clip(np.asarray(grey) + grain, 0, 255).round().astype(np.uint8)
        Image.fromarray(scan).save(args.folder / f"scan{i}.jpg", quality=92)


if __name__ == "__main__":
    main()
