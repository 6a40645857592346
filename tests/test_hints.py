"""Colour hints: parsing, the geodesic spread, and the CLI option."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from colorize_cli.cli import app
from colorize_cli.errors import ExitCode, UsageError
from colorize_cli.hint_image import read_hint_image
from colorize_cli.hints import Hint, PaintedHint, apply_hints, geodesic_distance, parse_hint


def test_hints_parse_pixels_percentages_colour_names_and_reach():
    h = parse_hint("120,80:#b22222")
    assert (h.x, h.y, h.relative, h.rgb) == (120, 80, False, (178, 34, 34))
    assert h.position(241, 161) == pytest.approx((0.5, 0.5))
    h = parse_hint(" 40%, 25% : navy : 10% ")
    assert (h.x, h.y, h.relative, h.rgb, h.reach) == (0.4, 0.25, True, (0, 0, 128), 0.1)
    assert parse_hint("199.6,99.9:red").position(200, 100) == (0.9975, 0.995)  # inside the last pixel: its centre
    # Percentages name a pixel too: on a 2x2 photo 100% is the centre of the second pixel, 0% of the first.
    assert parse_hint("100%,0%:red").position(2, 2) == (0.75, 0.25)
    assert parse_hint("50%,50%:red").position(1, 1) == (0.5, 0.5)
    for outside in ("300,10:red", "200,10:red", "5,100:red"):
        with pytest.raises(ValueError, match="outside"):
            parse_hint(outside).position(200, 100)


@pytest.mark.parametrize("text", ["10:red", "10,20", "10%,20:red", "10,20:notacolour", "150%,20%:red",
                                  "10,20:red:0", "-5,3:red",
                                  # digits of other scripts and line breaks went into the note garbled
                                  "\u0663,5:red", "10,10:rgb(\u0663,0,0)", "10,10:red\n:30%"])
def test_malformed_hints_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_hint(text)


def test_a_hint_made_in_python_is_named_by_the_text_that_gives_it():
    """A Hint made without text was recorded as `hint ` in the output's note, and named '' in errors."""
    for hint in (Hint(0.5, 0.25, True, (178, 34, 34), 0.1), Hint(120, 80, False, (0, 0, 128)),
                 Hint(0, 7.5, False, (255, 255, 255), 0.005)):
        again = parse_hint(hint.text)
        assert (again.x, again.y, again.relative, again.rgb, again.reach) == (hint.x, hint.y, hint.relative,
                                                                               hint.rgb, hint.reach)
    assert Hint(0.5, 0.25, True, (178, 34, 34), 0.1).text == "50%,25%:#b22222:10%"
    assert Hint(120, 80, False, (0, 0, 128)).text == "120,80:#000080"
    assert Hint(1, 2, False, (0, 0, 0), text="mine").text == "mine"
    with pytest.raises(ValueError, match="hint '120,80:#000080' is outside"):
        Hint(120, 80, False, (0, 0, 128)).position(100, 100)
    with pytest.raises(UsageError, match="reach"):
        Hint(0.5, 0.5, True, (0, 0, 0), reach=True)


def dijkstra(L: np.ndarray, start: tuple[int, int], tolerance: float, edge_cost: float,
             toll: np.ndarray | None = None) -> np.ndarray:
    h, w = L.shape
    best = np.full((h, w), np.inf)
    best[start] = 0.0
    queue = [(0.0, *start)]
    while queue:
        d, y, x = heapq.heappop(queue)
        if d > best[y, x]:
            continue
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = y + dy, x + dx
                if (dy or dx) and 0 <= ny < h and 0 <= nx < w:
                    step = math.hypot(dy, dx) + edge_cost * max(0.0, abs(L[y, x] - L[ny, nx]) - tolerance)
                    if toll is not None:  # the mean of the two pixels' tolls
                        step += 0.5 * (toll[y, x] + toll[ny, nx])
                    if d + step < best[ny, nx] - 1e-9:
                        best[ny, nx] = d + step
                        heapq.heappush(queue, (d + step, ny, nx))
    return best


@pytest.mark.parametrize("tolerance", [0.0, 5.0])
def test_geodesic_distance_is_the_shortest_path(tolerance):
    L = np.random.default_rng(1).uniform(0, 100, (17, 23)).astype(np.float32)
    toll = np.random.default_rng(2).uniform(0, 3, (17, 23)).astype(np.float32)
    seeds = torch.zeros(2, 17, 23, dtype=torch.bool)
    seeds[0, 3, 5] = True
    seeds[1, 16, 0] = True
    got = geodesic_distance(torch.from_numpy(L), seeds, edge_cost=2.0, tolerance=tolerance)
    tolled = geodesic_distance(torch.from_numpy(L), seeds, edge_cost=2.0, tolerance=tolerance, toll=torch.from_numpy(toll))
    for k, start in enumerate([(3, 5), (16, 0)]):
        np.testing.assert_allclose(got[k].numpy(), dijkstra(L, start, tolerance, 2.0), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(tolled[k].numpy(), dijkstra(L, start, tolerance, 2.0, toll), rtol=1e-4, atol=1e-3)


def test_a_hint_fills_its_side_of_an_edge_and_not_the_other():
    h, w = 64, 64
    L = torch.full((1, h, w), 30.0)
    L[:, :, 32:] = 70.0  # a strong vertical edge
    ab = torch.zeros(2, h, w)
    red = Hint(16, 32, False, (200, 30, 30), reach=0.5, text="16,32:red:50%")
    out = apply_hints(ab, L, [red])
    a_red = red.ab()[0]
    assert out[0, 32, 16] == pytest.approx(a_red, rel=1e-3)  # on the spot: the hint's colour
    assert out[0, 32, 28] > 0.8 * a_red  # the same surface, 12 px away
    assert out[0, 32, 36] < 0.05 * a_red  # across the edge, 20 px away: the model's colour
    assert torch.equal(apply_hints(ab, L, []), ab)


@pytest.mark.parametrize("inside", [2, 3])
def test_a_hint_next_to_an_edge_does_not_flood_the_other_side(inside):
    """The hint's spot (1% of the longer side) once seeded every pixel in it, across an edge too:
    a click a few pixels inside a disc turned the whole background the hint's colour. Now a hint
    near the edge leaks no more than one deep inside (the little a curved edge lets through)."""
    h, w = 160, 240
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = (xx - 120) ** 2 + (yy - 80) ** 2 < 48**2
    L = torch.where(disc, 80.0, 20.0)[None]
    far_outside = ~((xx - 120) ** 2 + (yy - 80) ** 2 < 52**2)

    def leak(x: int) -> tuple[float, float]:
        chroma = apply_hints(torch.zeros(2, h, w), L, [Hint(x, 80, False, (0, 0, 255), text="blue")]).norm(dim=0)
        return float(chroma[far_outside].max()), float(chroma[far_outside].mean())

    (near_max, near_mean), (deep_max, deep_mean) = leak(120 + 48 - inside), leak(120 + 48 - 6)
    assert near_max < deep_max + 5 and near_mean < 2 * deep_mean + 0.1
    # ... and a hint deep inside no longer creeps round the curved edge (it left a halo up to 13.5)
    assert deep_max < 1.0


def test_a_hint_on_a_thin_line_stays_on_the_line():
    L = torch.full((1, 64, 128), 20.0)
    L[:, 31:34, :] = 80.0  # a 3-px bright line
    red = Hint(64, 32, False, (220, 20, 20), text="red")
    out = apply_hints(torch.zeros(2, 64, 128), L, [red])
    assert out[0, 32, 44:85].min() > 0.9 * red.ab()[0]  # along the line
    assert out[:, :27].abs().max() < 1.0 and out[:, 38:].abs().max() < 1.0  # not either side


def test_two_hints_share_a_surface_by_closeness():
    L = torch.full((1, 32, 64), 50.0)
    blue = Hint(0.1, 0.5, True, (30, 60, 200), 0.3, "blue")
    yellow = Hint(0.9, 0.5, True, (230, 200, 40), 0.3, "yellow")
    out = apply_hints(torch.zeros(2, 32, 64), L, [blue, yellow])
    assert out[1, 16, 6] == pytest.approx(blue.ab()[1], rel=0.02)
    assert out[1, 16, 57] == pytest.approx(yellow.ab()[1], rel=0.02)


def grey_halves(path, size=(96, 64)):
    w, h = size
    pixels = np.full((h, w), 60, np.uint8)
    pixels[:, w // 2:] = 190
    Image.fromarray(pixels).save(path)
    return path


def test_cli_hint_colours_the_photo_and_is_recorded(tmp_path, tiny_weights):
    src = grey_halves(tmp_path / "halves.png")
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, [str(src), "-o", str(out), "--weights", str(tiny_weights["unet"]),
                                      "--hint", "20,32:#1e3cc8"])
    assert result.exit_code == 0, result.output
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    r, g, b = rgb[32, 20]
    assert b > r + 40 and b > g + 40  # blue where the hint is
    r, g, b = rgb[32, 80]
    assert abs(b - r) < 40  # the bright half keeps the (tiny, near-grey) model's colour
    assert "hint 20,32:#1e3cc8" in Image.open(out).text["Software"]


def test_a_percentage_hint_on_a_tiny_photo_colours_the_pixel_it_names(tmp_path, tiny_weights):
    src = tmp_path / "two.png"
    Image.fromarray(np.full((2, 2), 128, np.uint8)).save(src)
    outputs = []
    for hint in ("100%,100%:#ff0000", "1,1:#ff0000"):
        out = tmp_path / f"{len(outputs)}.png"
        result = CliRunner().invoke(app, [str(src), "-o", str(out), "--weights", str(tiny_weights["unet"]),
                                          "--hint", hint])
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(out).convert("RGB")).astype(int))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    r, g, b = outputs[0][1, 1]
    assert r > g + 60 and r > b + 60


def test_cli_hint_errors_are_usage_errors_found_before_the_model_loads(tmp_path, tiny_weights, monkeypatch):
    from colorize_cli import pipeline

    src = grey_halves(tmp_path / "halves.png")
    runner = CliRunner()
    weights = ["--weights", str(tiny_weights["unet"])]
    real_load = pipeline.Engine.load
    monkeypatch.setattr(pipeline.Engine, "load", lambda *a, **k: pytest.fail("model loaded for a bad hint"))
    outside = runner.invoke(app, [str(src), "-o", str(tmp_path / "a.png"), *weights, "--hint", "500,10:red"])
    assert outside.exit_code == ExitCode.USAGE and "outside the 96x64 photo" in outside.stderr
    assert not (tmp_path / "a.png").exists()
    monkeypatch.setattr(pipeline.Engine, "load", real_load)

    # the size is the upright photo's: a quarter-turned 96x64 file is 64 wide, 96 high
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = tmp_path / "turned.jpg"
    Image.open(src).save(turned, exif=exif.tobytes())
    inside = runner.invoke(app, [str(turned), "-o", str(tmp_path / "t.png"), *weights, "--hint", "10,90:red"])
    assert inside.exit_code == 0, inside.output
    assert runner.invoke(app, [str(turned), "-o", str(tmp_path / "u.png"), *weights,
                               "--hint", "90,10:red"]).exit_code == ExitCode.USAGE
    two = runner.invoke(app, [str(src), str(src), "-o", str(tmp_path / "o"), *weights, "--hint", "5,5:red"])
    assert two.exit_code == ExitCode.USAGE and "exactly one input" in two.stderr
    bad = runner.invoke(app, [str(src), *weights, "--hint", "5,5:nocolour"])
    assert bad.exit_code == ExitCode.USAGE and bad.stderr.startswith("Error: --hint")


def stroke_layer(path, size, strokes, soft=False):
    """A transparent RGBA layer of `size` (w, h) with rectangles (x0, y0, x1, y1, rgb) painted on it;
    `soft`: a half-transparent rim round each, as a soft brush leaves."""
    w, h = size
    rgba = np.zeros((h, w, 4), np.uint8)
    for x0, y0, x1, y1, rgb in strokes:
        if soft:
            rgba[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = (*rgb, 100)
        rgba[y0:y1, x0:x1] = (*rgb, 255)
    Image.fromarray(rgba).save(path)
    return path


def test_a_hint_image_gives_one_hint_per_painted_colour(tmp_path):
    layer = stroke_layer(tmp_path / "strokes.png", (96, 64),
                         [(5, 5, 20, 8, (200, 30, 30)), (60, 40, 61, 60, (30, 60, 200)), (30, 50, 40, 52, (200, 30, 30))],
                         soft=True)
    hints = read_hint_image(layer)
    assert len(hints) == 2  # red (two strokes) and blue; the soft rims are no colour of their own
    red, blue = sorted(hints, key=lambda hint: -hint.ab()[0])
    want_red = Hint(0, 0, False, (200, 30, 30), text="r").ab()
    want_blue = Hint(0, 0, False, (30, 60, 200), text="b").ab()
    assert red.ab() == pytest.approx(want_red, abs=0.5) and blue.ab() == pytest.approx(want_blue, abs=0.5)
    assert int(red.mask.sum()) == 15 * 3 + 10 * 2 and int(blue.mask.sum()) == 20  # opaque pixels only
    assert bool(red.mask[6, 10]) and bool(blue.mask[50, 60]) and not bool(red.mask[50, 60])
    assert red.text == blue.text and '"strokes.png"' in red.text and "sha256" in red.text


def test_strokes_painted_on_a_copy_of_the_grey_photo_are_found_by_their_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(120, 3, (64, 96)), 0, 255).astype(np.uint8)  # grain, as a scan has
    painted = np.stack([grey] * 3, axis=-1)
    painted[20:24, 10:40] = (40, 160, 60)
    Image.fromarray(painted).save(tmp_path / "painted.jpg", quality=92)
    (green,) = read_hint_image(tmp_path / "painted.jpg")
    assert green.ab()[0] < -20 and green.ab()[1] > 15
    rows, cols = torch.nonzero(green.mask, as_tuple=True)
    assert 18 <= int(rows.min()) and int(rows.max()) <= 25  # the stroke's rows; not the grain around it
    # JPEG stores colour at half resolution in 16-px blocks: a little of the paint smears sideways
    assert int(green.mask[:, 10:40].sum()) >= 0.9 * int(green.mask.sum()) and int(green.mask[20:24, 10:40].sum()) >= 100


def test_a_hint_image_with_nothing_or_too_much_painted_is_a_usage_error(tmp_path):
    empty = stroke_layer(tmp_path / "empty.png", (32, 32), [])
    with pytest.raises(UsageError, match="nothing is painted"):
        read_hint_image(empty)
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(UsageError, match="no transparency and no colour"):
        read_hint_image(tmp_path / "grey.png")
    hues = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    rainbow = [(2 * k, 0, 2 * k + 2, 32, tuple(int(127 + 120 * math.cos(t + o)) for o in (0, 2.1, 4.2)))
               for k, t in enumerate(hues)]
    with pytest.raises(UsageError, match="different colours"):
        read_hint_image(stroke_layer(tmp_path / "rainbow.png", (80, 32), rainbow))


def test_a_painted_hint_fills_its_surface_stops_at_edges_and_survives_a_smaller_working_size():
    h, w = 64, 128  # the photo: dark left half, bright right half
    L = torch.full((1, h, w), 30.0)
    L[:, :, 64:] = 75.0
    mask = torch.zeros(256, 512, dtype=torch.bool)  # painted at 4x the working size ...
    mask[101:102, 40:120] = True  # ... a 1-px line, a quarter of a working pixel thick
    blue = PaintedHint(mask, Hint(0, 0, False, (30, 60, 200), text="b").ab(), text="image")
    out = apply_hints(torch.zeros(2, h, w), L, [blue], photo_size=(512, 256))
    assert out[1, 25, 10:30].max() < 0.8 * blue.ab()[1]  # b* is negative for blue: filled here
    assert out[:, :, 70:].abs().max() < 1.0  # not across the edge
    with pytest.raises(ValueError, match="not the shape"):
        blue.check_fits(512, 512)
    blue.check_fits(1024, 510)  # a scaled copy is the same shape


def test_cli_hint_image_colours_the_photo_and_is_recorded_once(tmp_path, tiny_weights):
    src = grey_halves(tmp_path / "halves.png")
    layer = stroke_layer(tmp_path / "strokes.png", (192, 128),  # twice the photo's size
                         [(20, 50, 60, 70, (30, 60, 200)), (150, 20, 170, 30, (200, 200, 40))])
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, [str(src), "-o", str(out), "--weights", str(tiny_weights["unet"]),
                                      "--hint-image", str(layer), "--hint", "90,60:#ff0000"])
    assert result.exit_code == 0, result.output
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    r, g, b = rgb[30, 20]
    assert b > r + 40 and b > g + 40  # blue over the dark half
    note = Image.open(out).text["Software"]
    assert note.count('hint image "strokes.png"') == 1 and "hint 90,60:#ff0000" in note


def test_cli_hint_image_errors(tmp_path, tiny_weights, monkeypatch):
    from colorize_cli import pipeline

    src = grey_halves(tmp_path / "halves.png")
    weights = ["--weights", str(tiny_weights["unet"])]
    monkeypatch.setattr(pipeline.Engine, "load", lambda *a, **k: pytest.fail("model loaded for a bad hint image"))
    runner = CliRunner()
    square = stroke_layer(tmp_path / "square.png", (64, 64), [(5, 5, 9, 9, (200, 30, 30))])
    shape = runner.invoke(app, [str(src), "-o", str(tmp_path / "a.png"), *weights, "--hint-image", str(square)])
    assert shape.exit_code == ExitCode.USAGE and "not the shape of the 96x64 photo" in shape.stderr
    (tmp_path / "junk.png").write_bytes(b"not an image")
    junk = runner.invoke(app, [str(src), "-o", str(tmp_path / "b.png"), *weights, "--hint-image", str(tmp_path / "junk.png")])
    assert junk.exit_code == ExitCode.BAD_INPUT and "--hint-image: Cannot read" in junk.stderr and "junk.png" in junk.stderr
    missing = runner.invoke(app, [str(src), "-o", str(tmp_path / "c.png"), *weights, "--hint-image", str(tmp_path / "no.png")])
    assert missing.exit_code == ExitCode.BAD_INPUT
    two = runner.invoke(app, [str(src), str(src), "-o", str(tmp_path / "o"), *weights, "--hint-image", str(square)])
    assert two.exit_code == ExitCode.USAGE and "--hint-image places colours on one photo" in two.stderr
    assert not any((tmp_path / name).exists() for name in ("a.png", "b.png", "c.png", "o"))


def test_the_api_takes_a_hint_images_colours(tmp_path, tiny_weights):
    from colorize_cli import Colorizer

    grey = np.asarray(Image.open(grey_halves(tmp_path / "halves.png")))
    layer = stroke_layer(tmp_path / "strokes.png", (96, 64), [(10, 25, 30, 35, (30, 60, 200))])
    colorizer = Colorizer(weights=tiny_weights["unet"], device="cpu")
    coloured = colorizer.colorize(grey, hints=read_hint_image(layer, prefix=""))
    r, g, b = coloured[30, 20].astype(int)
    assert b > r + 40
    with pytest.raises(ValueError, match="not the shape"):
        colorizer.colorize(grey[:, :40], hints=read_hint_image(layer, prefix=""))


def test_a_layers_antialiased_crossings_and_lossy_saving_add_no_paints(tmp_path):
    """Where strokes cross, or a layer is scaled or saved lossily, its edges hold blends no one
    painted: they join the paint whose rim they are."""
    w, h = 240, 160
    rgba = np.zeros((h, w, 4), np.uint8)
    paints = [(220, 40, 40), (40, 90, 220), (40, 170, 60)]
    rgba[20:40, 10:230] = (*paints[0], 255)  # a red bar across ...
    rgba[10:150, 50:70] = (*paints[1], 255)  # ... crossed by a blue one
    rgba[60:80, 100:200] = (*paints[2], 255)
    layer = Image.fromarray(rgba)
    wanted = sorted(Hint(0, 0, False, rgb, text="x").ab() for rgb in paints)
    for name, image, options in [("bicubic.png", layer.resize((w // 2, h // 2), Image.BICUBIC), {}),
                                 ("lossy.webp", layer, {"quality": 80})]:
        image.save(tmp_path / name, **options)
        found = sorted(hint.ab() for hint in read_hint_image(tmp_path / name))
        assert len(found) == 3, (name, found)
        for got, want in zip(found, wanted):
            assert np.hypot(got[0] - want[0], got[1] - want[1]) < 6, (name, got, want)


def test_a_copy_with_a_stray_transparent_pixel_is_still_a_copy_and_a_toned_photo_is_refused(tmp_path):
    grey = np.full((60, 90), 120, np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    rgba[20:30, 10:50, :3] = (40, 90, 220)
    rgba[0, 0, 3] = 254  # one pixel not quite opaque: no layer, so its grey is no paint
    Image.fromarray(rgba).save(tmp_path / "copy.png")
    (blue,) = read_hint_image(tmp_path / "copy.png")
    assert int(blue.mask.sum()) == 400
    sepia = np.stack([grey + 30, grey + 10, grey - 15], axis=-1)  # a toned print, a stroke on it
    sepia[20:30, 10:50] = (40, 90, 220)
    Image.fromarray(sepia).save(tmp_path / "sepia.png")
    with pytest.raises(UsageError, match="colour or toned photo"):
        read_hint_image(tmp_path / "sepia.png")


def test_a_copy_with_transparent_margins_is_a_copy_and_a_painted_grey_on_a_layer_is_paint(tmp_path):
    rgba = np.zeros((100, 160, 4), np.uint8)
    shades = np.tile(np.linspace(30, 220, 120).astype(np.uint8), (60, 1))  # a photo's greys
    rgba[20:80, 20:140] = np.stack([shades, shades, shades, np.full_like(shades, 255)], axis=-1)
    rgba[40:50, 30:90, :3] = (40, 90, 220)  # a stroke on the photo
    Image.fromarray(rgba).save(tmp_path / "margins.png")
    (blue,) = read_hint_image(tmp_path / "margins.png")  # the photo's greys are no paint
    assert int(blue.mask.sum()) == 600 and near(blue.ab(), (40, 90, 220), 1)
    layer = stroke_layer(tmp_path / "grey.png", (160, 100), [(10, 10, 150, 60, (128, 128, 128)), (20, 70, 60, 80, (40, 90, 220))])
    assert len(read_hint_image(layer)) == 2  # a flat grey painted on a layer keeps its surface neutral


def test_a_large_hint_image_is_reduced_keeping_a_one_pixel_stroke(tmp_path):
    from colorize_cli import hint_image

    rgba = np.zeros((3000, 4500, 4), np.uint8)
    rgba[1501, 1000:3000] = (220, 40, 40, 255)  # one pixel thick
    Image.fromarray(rgba).save(tmp_path / "big.png")
    (red,) = read_hint_image(tmp_path / "big.png")
    assert max(red.mask.shape) <= hint_image.LARGEST_SIDE and red.size == (4500, 3000)
    assert int(red.mask.sum()) >= 2000 // 3 - 2  # the line, at a third of the size
    red.check_fits(450, 300)


def drawn(path, base, lines, **options):
    """`base` (grey RGB, or RGBA for a layer) with anti-aliased lines ((x0, y0, x1, y1), width, rgb)
    drawn at 4x and box-reduced, as an editor's brush leaves them; saved to `path`."""
    image = Image.fromarray(base)
    big = image.resize((image.width * 4, image.height * 4))
    draw = ImageDraw.Draw(big)
    for (x0, y0, x1, y1), width, rgb in lines:
        draw.line([(4 * x0, 4 * y0), (4 * x1, 4 * y1)], fill=rgb + ((255,) if image.mode == "RGBA" else ()),
                  width=4 * width)
    big.resize(image.size, Image.BOX).save(path, **options)
    return path


def painted(path):
    return sorted(((hint.ab(), int(hint.mask.sum())) for hint in read_hint_image(path)), key=lambda found: -found[1])


def near(ab, rgb, within):
    want = Hint(0, 0, False, rgb, text="x").ab()
    return math.hypot(ab[0] - want[0], ab[1] - want[1]) < within


SKIN, BROWN, GREEN, RED, BLUE = (235, 200, 170), (120, 80, 40), (60, 140, 60), (200, 40, 40), (40, 90, 200)


def test_strokes_apart_on_a_copy_stay_apart_however_near_their_colours(tmp_path):
    # skin and a thin brown line 11 a*b* apart, 150 px apart: a colour group spanning the image
    # once made the skin brown
    grey = np.full((300, 400, 3), 120, np.uint8)
    (skin, _), (brown, _) = painted(drawn(tmp_path / "a.png", grey, [((30, 60, 370, 60), 20, SKIN),
                                                                   ((30, 220, 370, 220), 3, BROWN)]))
    assert near(skin, SKIN, 1) and near(brown, BROWN, 1)


def test_crossing_strokes_on_a_jpeg_copy_are_two_paints(tmp_path):
    grey = np.full((300, 400, 3), 120, np.uint8)
    found = painted(drawn(tmp_path / "c.jpg", grey, [((100, 50, 300, 250), 6, GREEN), ((100, 250, 300, 50), 6, RED)],
                          quality=85))
    assert len(found) == 2, found  # not one, nor the JPEG's ringing as paints of its own
    assert {near(ab, GREEN, 8) for ab, _ in found} == {True, False} and any(near(ab, RED, 8) for ab, _ in found)


def test_a_dab_on_another_paint_keeps_its_colour(tmp_path):
    layer = np.zeros((300, 400, 4), np.uint8)
    (skin, _), (blue, size) = painted(drawn(tmp_path / "d.png", layer, [((50, 150, 350, 150), 40, SKIN),
                                                                         ((200, 148, 200, 152), 5, BLUE)]))
    assert near(skin, SKIN, 0.5) and near(blue, BLUE, 0.5)  # the dab's blends with the skin are no part of it
    assert 9 <= size <= 30


def test_a_soft_brushs_fading_edge_is_part_of_its_stroke(tmp_path):
    from PIL import ImageFilter

    mask = Image.new("L", (200, 120), 0)
    ImageDraw.Draw(mask).line([(30, 60), (170, 60)], fill=255, width=40)
    coverage = np.asarray(mask.filter(ImageFilter.GaussianBlur(6))).astype(np.float32)[..., None] / 255
    copy = 120 * (1 - coverage) + np.array(RED, np.float32) * coverage
    Image.fromarray(np.round(copy).astype(np.uint8)).save(tmp_path / "soft.png")
    (red,) = read_hint_image(tmp_path / "soft.png")
    assert near(red.ab(), RED, 4) and int(red.mask[45:76, 40:160].sum()) == 31 * 120


def test_a_pale_stroke_along_a_strong_one_of_its_hue_is_no_soft_edge_of_it(tmp_path):
    grey = np.full((240, 400, 3), 120, np.uint8)
    pink = (235, 160, 160)
    found = painted(drawn(tmp_path / "p.png", grey, [((50, 100, 350, 100), 30, RED), ((50, 119, 350, 119), 8, pink)]))
    assert len(found) == 2 and near(found[0][0], RED, 1) and near(found[1][0], pink, 2)


def test_confetti_is_refused_before_its_patches_are_weighed_one_by_one(tmp_path, monkeypatch):
    from colorize_cli import hint_image

    rng = np.random.default_rng(0)
    noise = np.full((120, 160, 3), 120, np.uint8)
    speckled = rng.random((120, 160)) < 0.4
    noise[speckled] = rng.integers(0, 256, (int(speckled.sum()), 3))
    Image.fromarray(noise).save(tmp_path / "confetti.png")
    monkeypatch.setattr(hint_image, "MAX_PATCHES", 1000)  # (the real limit needs a larger image)
    with pytest.raises(UsageError, match=r"separate patches, more than painted strokes make \(at most 1,000\)"):
        read_hint_image(tmp_path / "confetti.png")


def test_connected_regions_are_found_as_a_flood_fill_finds_them():
    from colorize_cli.hint_image import _components

    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 3, (40, 50))
    regions, region_label = _components(labels)
    assert ((regions >= 0) == (labels >= 0)).all() and (region_label[regions[labels >= 0]] == labels[labels >= 0]).all()
    seen = np.full(labels.shape, -1)
    count = 0
    for start in zip(*np.nonzero(labels >= 0)):
        if seen[start] >= 0:
            continue
        stack = [start]
        seen[start] = count
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < 40 and 0 <= u < 50 and seen[v, u] < 0 and labels[v, u] == labels[y, x]:
                        seen[v, u] = count
                        stack.append((v, u))
        count += 1
    assert len(region_label) == count
    # the same partition: each flood-filled patch is exactly one region
    pairs = np.unique(np.stack([seen[labels >= 0], regions[labels >= 0]]), axis=1)
    assert pairs.shape[1] == count


def test_a_painted_hint_made_in_python_is_checked():
    good = torch.zeros(4, 6, dtype=torch.bool)
    for bad in [dict(mask=np.zeros((4, 6), bool), colour_ab=(1, 2)), dict(mask=torch.zeros(0, 6, dtype=torch.bool), colour_ab=(1, 2)),
                dict(mask=good, colour_ab=(float("nan"), 2)), dict(mask=good, colour_ab="red"),
                dict(mask=good, colour_ab=(1, 2), reach=0), dict(mask=good, colour_ab=(1, 2), size=(0, 4))]:
        with pytest.raises(UsageError):
            PaintedHint(**bad)
    assert PaintedHint(good, (1, 2)).size == (6, 4)
    # the shape check is the same both ways round
    PaintedHint(good, (1, 2), size=(1000, 509)).check_fits(1000, 500)
    PaintedHint(good, (1, 2), size=(509, 1000)).check_fits(500, 1000)
    for size, photo in [((1000, 512), (1000, 500)), ((512, 1000), (500, 1000))]:
        with pytest.raises(ValueError, match="not the shape"):
            PaintedHint(good, (1, 2), size=size).check_fits(*photo)


def test_cli_takes_several_hint_images_and_refuses_standard_input_as_one(tmp_path, tiny_weights):
    src = grey_halves(tmp_path / "halves.png")
    blue = stroke_layer(tmp_path / "blue.png", (96, 64), [(10, 25, 30, 35, (30, 60, 200))])
    yellow = stroke_layer(tmp_path / "yellow.png", (96, 64), [(60, 25, 90, 35, (200, 200, 40))])
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, [str(src), "-o", str(out), "--weights", str(tiny_weights["unet"]),
                                      "--hint-image", str(blue), "--hint-image", str(yellow)])
    assert result.exit_code == 0, result.output
    note = Image.open(out).text["Software"]
    assert 'hint image "blue.png"' in note and 'hint image "yellow.png"' in note
    dash = CliRunner().invoke(app, [str(src), "-o", str(tmp_path / "d.png"), "--weights", str(tiny_weights["unet"]),
                                    "--hint-image", "-"])
    assert dash.exit_code == ExitCode.USAGE and "standard input" in dash.stderr
