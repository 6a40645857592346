"""Make the README's before/after pictures from public-domain / CC0 photos that ship with
scikit-image (camera: CC0, Lav Varshney; astronaut: public domain, NASA; coffee: CC0, Rachel
Michetti; rocket: public domain, SpaceX).

    python docs/make_examples.py [--models unet,lab-ddpm | --weights FILE] [--saturations unet=1,2.5]
    python docs/make_examples.py --hints        # only the colour-hints figures (astronaut): points, and
                                                # painted strokes (also examples/astronaut*.png to try them)

The colour photos are first turned into their L* (what a black-and-white print keeps), then
coloured; the panel shows grey input | each model | original colour, so you can judge honestly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from colorize_cli.color import grey_to_rgb
from colorize_cli.pipeline import Engine
from colorize_cli.upsample import luminance

HERE = Path(__file__).resolve().parent
PHOTOS = ("camera", "astronaut", "coffee", "rocket")
PANEL_HEIGHT = 300


def grey_version(rgb: np.ndarray) -> np.ndarray:
    """The photo as a black-and-white print: its L* shown as neutral grey sRGB."""
    import torch

    L = torch.from_numpy(luminance(rgb))[None, None]
    return (grey_to_rgb(L)[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def panel(images: list[tuple[str, np.ndarray]]) -> Image.Image:
    tiles = []
    for label, pixels in images:
        im = Image.fromarray(pixels)
        im = im.resize((round(im.width * PANEL_HEIGHT / im.height), PANEL_HEIGHT), Image.LANCZOS)
        ImageDraw.Draw(im).text((6, 4), label, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        tiles.append(im)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), PANEL_HEIGHT), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    return sheet


# (x, y) in percent of the astronaut photo: the suit and a red stripe of the flag. The hint
# colours are read from the original colour photo at those points, as a user would remember them.
HINT_POINTS = ((45, 80), (5, 55))


def hints_figure(engine: Engine, out: Path) -> None:
    """grey | the model alone | the model with two hints | the original."""
    import skimage.data

    from colorize_cli.hints import parse_hint

    original = skimage.data.astronaut()
    grey = grey_version(original)
    height, width = grey.shape[:2]
    texts = []
    for x, y in HINT_POINTS:
        r, g, b = original[round(y / 100 * (height - 1)), round(x / 100 * (width - 1))]
        texts.append(f"{x}%,{y}%:#{r:02x}{g:02x}{b:02x}")
    hints = [parse_hint(t) for t in texts]
    plain = engine.colorize_pixels([grey])[0]
    hinted = engine.colorize_pixels([grey], hints=[hints])[0]
    first_only = engine.colorize_pixels([grey], hints=[hints[:1]])[0]
    label = " ".join(f"--hint {t}" for t in texts)
    print(f"astronaut: colorize --model {engine.name} {label}")
    import skimage.color

    truth = skimage.color.rgb2lab(original)
    for name, pixels in (("grey", grey), (engine.name, plain), ("first hint only", first_only), ("both hints", hinted)):
        error = skimage.color.deltaE_ciede2000(truth, skimage.color.rgb2lab(pixels)).mean()
        print(f"  CIEDE2000 to the original, {name}: {error:.2f}")
    panel([("black & white", grey), (f"colorize --model {engine.name}", plain),
           ("+ " + "  ".join(texts), hinted), ("original colour", original)]).save(out / "example-hints.jpg", quality=88)


# Strokes on the astronaut photo, as someone would paint them on a layer: (points in percent,
# brush width in px). Each one's colour is the median of the original photo under it, as a user
# would remember it: the suit (twice), a red stripe of the flag, her hair, a cheek, the rocket's
# tank and the wall (a light grey: painting it keeps the wall neutral).
STROKES = (
    (((15, 62), (22, 85)), 8), (((62, 56), (66, 64)), 8), (((5, 55), (5.5, 56)), 8),
    (((40, 8), (52, 6)), 6), (((41, 22), (42, 24)), 6), (((80, 5), (80, 15)), 6), (((62, 20), (70, 30)), 6),
)


def painted_figure(engine: Engine, out: Path) -> None:
    """black & white with strokes | the model alone | with the strokes (--hint-image) | the original;
    also writes examples/astronaut.png and examples/astronaut-strokes.png, to try the option on."""
    import skimage.color
    import skimage.data

    from colorize_cli.hint_image import read_hint_image

    original = skimage.data.astronaut()
    grey = grey_version(original)
    height, width = grey.shape[:2]
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    for points, brush in STROKES:
        xy = [(x / 100 * (width - 1), y / 100 * (height - 1)) for x, y in points]
        where = Image.new("L", (width, height), 0)
        ImageDraw.Draw(where).line(xy, fill=255, width=brush, joint="curve")
        colour = np.median(original[np.asarray(where) > 0], axis=0).astype(int)
        ImageDraw.Draw(layer).line(xy, fill=(*colour, 255), width=brush, joint="curve")
    examples = HERE.parent / "examples"
    Image.fromarray(grey[..., 0]).save(examples / "astronaut.png", optimize=True)
    layer.save(examples / "astronaut-strokes.png", optimize=True)
    hints = read_hint_image(examples / "astronaut-strokes.png")
    plain = engine.colorize_pixels([grey])[0]
    painted = engine.colorize_pixels([grey], hints=[hints])[0]
    print(f"astronaut: colorize examples/astronaut.png --model {engine.name} --hint-image examples/astronaut-strokes.png"
          f" ({len(hints)} colours)")
    truth = skimage.color.rgb2lab(original)
    for name, pixels in (("grey", grey), (engine.name, plain), ("painted strokes", painted)):
        error = skimage.color.deltaE_ciede2000(truth, skimage.color.rgb2lab(pixels)).mean()
        print(f"  CIEDE2000 to the original, {name}: {error:.2f}")
    shown = Image.fromarray(grey).convert("RGBA")
    shown.alpha_composite(layer)
    panel([("black & white + strokes", np.asarray(shown.convert("RGB"))), (f"colorize --model {engine.name}", plain),
           ("--hint-image astronaut-strokes.png", painted), ("original colour", original)]).save(
        out / "example-painted.jpg", quality=88)


def main() -> None:
    import skimage.data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated registry names (default: the default model)")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--saturations", default="", help="extra tiles, e.g. unet=2.5 (the model at --saturation 2.5)")
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--hints", action="store_true", help="make only the colour-hints figures")
    args = parser.parse_args()
    if args.weights:
        engines = [Engine.load(weights=args.weights, device="cpu")]
    else:
        names = args.models.split(",") if args.models else [None]
        engines = [Engine.load(model=name, device="cpu") for name in names]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.hints:
        hints_figure(engines[0], args.out)
        painted_figure(engines[0], args.out)
        return
    extra: dict[str, list[float]] = {}
    for item in filter(None, args.saturations.split(",")):
        model, _, value = item.rpartition("=")
        extra.setdefault(model or engines[0].name, []).append(float(value))
    for name in PHOTOS:
        original = getattr(skimage.data, name)()
        if original.ndim == 2:  # camera is a real black-and-white photograph
            original = np.repeat(original[..., None], 3, axis=2)
        was_colour = not (original[..., 0] == original[..., 1]).all()
        grey = grey_version(original) if was_colour else original
        if name == "camera":
            Image.fromarray(grey[..., 0]).save(HERE.parent / "examples" / "camera.png")
        tiles = [("black & white", grey)]
        for engine in engines:
            for saturation in [None, *extra.get(engine.name, [])]:
                start = time.perf_counter()
                coloured = engine.colorize_pixels([grey], seeds=[0], saturation=saturation)[0]
                seconds = time.perf_counter() - start
                label = f"colorize --model {engine.name}" + (f" --saturation {saturation:g}" if saturation else "")
                tiles.append((label, coloured))
                print(f"{name}: {original.shape[1]}x{original.shape[0]} coloured by {label} in {seconds:.2f} s")
        if was_colour:
            tiles.append(("original colour", original[..., :3]))
        panel(tiles).save(args.out / f"example-{name}.jpg", quality=88)


if __name__ == "__main__":
    main()
