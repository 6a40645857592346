"""Write a multi-page greyscale TIFF (an "album") for measuring how colorize handles one.

Each page is scikit-image's `camera` (CC0), enlarged to the size asked for and shifted
sideways by 40 px per page, so no two pages are the same.

    python benchmarks/make_album.py /tmp/album6.tif --pages 6 --size 4000x3000
    /usr/bin/time -f "%e s %M KB" colorize /tmp/album6.tif -o /tmp/album6-colour.tif
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the .tif to write")
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of every page")
    args = parser.parse_args()
    from skimage import data

    width, height = (int(v) for v in args.size.lower().split("x"))
    camera = data.camera()
    pages = [Image.fromarray(np.roll(camera, 40 * i, axis=1)).resize((width, height), Image.BILINEAR)
             for i in range(args.pages)]
    pages[0].save(args.out, save_all=True, append_images=pages[1:])


if __name__ == "__main__":
    main()
