"""The Python API: Pillow and numpy images in and out, the same colours as the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from colorize_cli import Colorizer
from colorize_cli.imageio import ImageError, OutputExistsError, load_image

from conftest import photo, save_photo
from test_cli import run


def _grey(h: int = 40, w: int = 56) -> np.ndarray:
    return np.asarray(Image.fromarray(photo(h, w)).convert("L"))


@pytest.fixture
def colorizer(fake_registry):
    return Colorizer(size=32, device="cpu")


def test_pillow_in_pillow_out_matches_the_command_line(colorizer, fake_registry, tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(_grey()).save(src)
    assert run(src, "-o", tmp_path / "cli.png", "--size", "32", "--device", "cpu").exit_code == 0
    out = colorizer.colorize(Image.open(src))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (56, 40)
    np.testing.assert_array_equal(np.asarray(out), load_image(tmp_path / "cli.png").pixels)
    assert colorizer.model_name == "tiny" and "size=32" in repr(colorizer)


def test_numpy_layouts_and_dtypes_come_back_as_they_went_in(colorizer):
    grey8 = _grey()
    out8 = colorizer.colorize(grey8)
    assert out8.dtype == np.uint8 and out8.shape == (40, 56, 3)
    assert np.abs(out8.astype(int) - out8[..., :1]).max() > 0  # it has colour
    out16 = colorizer.colorize(grey8.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and out16.shape == (40, 56, 3)
    np.testing.assert_allclose(out16 / 257.0, out8, atol=1.0)
    outf = colorizer.colorize(grey8[..., None] / 255.0)
    assert outf.dtype == np.float32 and outf.shape == (40, 56, 3) and 0 <= outf.min() and outf.max() <= 1
    np.testing.assert_allclose(outf * 255, out8, atol=1.0)
    rgba = np.dstack([np.repeat(grey8[..., None], 3, axis=2), np.full((40, 56), 77, np.uint8)])
    out_rgba = colorizer.colorize(rgba)
    assert out_rgba.shape == (40, 56, 4) and (out_rgba[..., 3] == 77).all()
    np.testing.assert_array_equal(out_rgba[..., :3], out8)


def test_pillow_alpha_and_16_bit_grey(colorizer):
    im = Image.fromarray(_grey()).convert("LA")
    out = colorizer.colorize(im)
    assert out.mode == "RGBA"
    wide = Image.fromarray(_grey().astype(np.uint16) * 257)  # mode I;16
    assert colorizer.colorize(wide).mode == "RGB"


def test_a_batch_gives_what_one_at_a_time_gives(colorizer):
    images = [_grey(), _grey(32, 32), _grey()[::-1].copy()]
    together = colorizer.colorize_many(images, batch_size=2)
    for image, out in zip(images, together):
        np.testing.assert_array_equal(out, colorizer.colorize(image))


def test_samples_and_seeds_pick_the_random_stream(fake_registry):
    grey = _grey()
    first = Colorizer(size=32, device="cpu", seed=3)
    again = Colorizer(size=32, device="cpu", seed=3)
    np.testing.assert_array_equal(first.colorize(grey), again.colorize(grey))
    assert not np.array_equal(first.colorize(grey, sample=1), first.colorize(grey))  # a diffusion model


def test_hints_as_text_and_outside_the_image(colorizer):
    grey = np.full((40, 56), 128, np.uint8)
    out = colorizer.colorize(grey, hints=["50%,50%:#d9633c"])
    r, g, b = out[20, 28].astype(int)
    assert r > b + 20  # the hint's orange at its point
    with pytest.raises(ValueError, match="outside"):
        colorizer.colorize(grey, hints=["500,5:red"])


def test_bad_arrays_and_settings_are_value_errors(fake_registry, colorizer):
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4,), np.uint8), np.zeros((4, 4), np.int64),
                np.full((4, 4), np.nan)):
        with pytest.raises(ValueError):
            colorizer.colorize(bad)
    with pytest.raises(ValueError, match="sampler"):
        Colorizer(sampler="nonsense", device="cpu")
    with pytest.raises(ValueError, match="saturation"):
        Colorizer(saturation=-1, device="cpu")
    # Named as the keyword arguments they are, not as the command line's flags.
    for settings in ({"sampler": "nonsense"}, {"saturation": -1}, {"size": 5000}, {"steps": 0}, {"steps": 1.5}):
        with pytest.raises(ValueError) as caught:
            Colorizer(device="cpu", **settings)
        assert "--" not in str(caught.value) and next(iter(settings)) in str(caught.value)
    # The command line's --size bounds hold here too (the tiny test model's stride is below 16).
    with pytest.raises(ValueError, match="between 16 and 4096"):
        Colorizer(device="cpu", size=8)
    assert Colorizer(device="cpu", size=16).size == 16


def test_colorize_file_writes_what_the_command_line_writes(colorizer, fake_registry, tmp_path):
    src = save_photo(tmp_path / "scan.png", "L")
    out = colorizer.colorize_file(src)
    assert out == tmp_path / "scan-colorized.png"
    assert run(src, "-o", tmp_path / "cli.png", "--size", "32", "--device", "cpu").exit_code == 0
    np.testing.assert_array_equal(load_image(out).pixels, load_image(tmp_path / "cli.png").pixels)
    assert "machine colourisation: model tiny" in Image.open(out).info.get("Software", "")
    with pytest.raises(OutputExistsError):
        colorizer.colorize_file(src)
    assert colorizer.colorize_file(src, overwrite=True) == out
    with pytest.raises(ImageError):
        colorizer.colorize_file(tmp_path / "missing.png", tmp_path / "x.png")
    long = save_photo(tmp_path / ("s" * 248 + ".png"), "L")  # its NAME-colorized.png would not fit a disk
    fitted = colorizer.colorize_file(long)
    assert fitted.is_file() and len(os.fsencode(fitted.name)) <= 255 and fitted.name.endswith("-colorized.png")
    before = src.read_bytes()
    with pytest.raises(Exception, match="input"):
        colorizer.colorize_file(src, src, overwrite=True)
    assert src.read_bytes() == before


def test_importing_the_package_does_not_import_torch():
    code = "import sys, colorize_cli; assert 'torch' not in sys.modules; colorize_cli.Colorizer; " \
           "assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_half_precision_floats_are_coloured_like_single(colorizer):
    grey = _grey() / 255.0
    np.testing.assert_allclose(colorizer.colorize(grey.astype(np.float16)), colorizer.colorize(grey.astype(np.float32)),
                               atol=2 / 255)


def test_bad_calls_are_value_errors_before_any_work(fake_registry, colorizer):
    grey = _grey()
    for kwargs in ({"batch_size": 0}, {"batch_size": -1}, {"samples": [0]}):
        with pytest.raises(ValueError):
            colorizer.colorize_many([grey, grey], **kwargs)
    for empty in (Image.new("L", (0, 0)), Image.new("L", (0, 5))):
        with pytest.raises(ValueError, match="shape"):
            colorizer.colorize(empty)
    for kwargs in ({"seed": -1}, {"seed": "a"}, {"seed": 1.5}, {"steps": 2.5}, {"steps": "3"}, {"size": 0},
                   {"size": "64"}, {"device": "gpu"}, {"saturation": "lots"}, {"saturation": "2"},
                   {"saturation": True}, {"sampler": ""}):
        with pytest.raises(ValueError):
            Colorizer(**kwargs)


def test_wrong_kinds_of_argument_are_type_errors_that_name_them(fake_registry, colorizer, tmp_path):
    grey = _grey()
    for not_pixels in ("photo.jpg", b"photo.jpg", tmp_path / "photo.jpg"):
        with pytest.raises(TypeError, match="not a path; for a file, use colorize_file"):
            colorizer.colorize(not_pixels)
    with pytest.raises(TypeError, match="numpy array or a Pillow image, not NoneType"):
        colorizer.colorize(None)
    for one in (grey, Image.fromarray(grey)):
        with pytest.raises(TypeError, match="colorize_many takes a list of images"):
            colorizer.colorize_many(one)
    for hints in (5, {"50%,50%:red": 1}):
        with pytest.raises(TypeError, match="hints is a hint string"):
            colorizer.colorize(grey, hints=hints)
    for name, call in (("source", lambda v: colorizer.colorize_file(v)),
                       ("output", lambda v: colorizer.colorize_file(tmp_path / "a.png", v)),
                       ("weights", lambda v: Colorizer(weights=v))):
        for bad in (3, b"/x.png"):
            with pytest.raises(TypeError, match=f"^{name} must be a"):
                call(bad)


def test_float_pixels_outside_0_to_1_are_refused_not_clipped(colorizer):
    grey = _grey().astype(np.float32)  # 0..255 as floats: clipped, it would come out white
    with pytest.raises(ValueError, match=r"within 0..1, these span \d+..\d+ .*divide by 255"):
        colorizer.colorize(grey)
    nearly = np.clip(_grey() / 255.0 + 0.001, 0, 1.001)  # a little rounding past 1 is clipped
    assert colorizer.colorize(nearly).shape == grey.shape + (3,)


def test_api_messages_name_keyword_arguments_not_flags(fake_registry, colorizer):
    import torch

    with pytest.raises(ValueError) as caught:
        colorizer.colorize(_grey(), hints="1,1")
    assert str(caught.value).startswith("hint '1,1'") and "--" not in str(caught.value)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError) as caught:
            Colorizer(device="cuda:1")
        assert "device='cuda:1'" in str(caught.value) and "--" not in str(caught.value)


def test_one_hint_may_be_given_on_its_own(colorizer):
    grey = np.full((40, 56), 128, np.uint8)
    np.testing.assert_array_equal(colorizer.colorize(grey, hints="50%,50%:#d9633c"),
                                  colorizer.colorize(grey, hints=["50%,50%:#d9633c"]))


def test_an_output_name_no_format_has_is_refused_before_colouring(colorizer, tmp_path, monkeypatch):
    src = save_photo(tmp_path / "scan.png", "L")
    monkeypatch.setattr(colorizer.engine, "colorize_pixels", None)  # colouring would fail loudly
    with pytest.raises(ValueError, match="extension"):
        colorizer.colorize_file(src, tmp_path / "scan.xyz")


def test_colorize_file_into_a_folder_names_the_output_as_the_command_line_does(colorizer, fake_registry, tmp_path):
    src = save_photo(tmp_path / "scan.png", "L")
    existing = tmp_path / "out"
    existing.mkdir()
    assert colorizer.colorize_file(src, existing) == existing / "scan-colorized.png"
    assert colorizer.colorize_file(src, tmp_path / "new") == tmp_path / "new" / "scan-colorized.png"
    assert run(src, "-o", tmp_path / "cli", "--size", "32", "--device", "cpu").exit_code == 0
    np.testing.assert_array_equal(load_image(existing / "scan-colorized.png").pixels,
                                  load_image(tmp_path / "cli" / "scan-colorized.png").pixels)


def test_colorize_file_colours_every_page_into_a_tiff_and_warns_when_the_output_holds_one(colorizer, tmp_path):
    from colorize_cli.imageio import load_pages

    pages = [Image.fromarray(np.full((24, 32), 50 * (i + 1), np.uint8)) for i in range(2)]
    pages[0].save(tmp_path / "album.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(UserWarning, match="album.tif has 2 pages; only the first was coloured"):
        colorizer.colorize_file(tmp_path / "album.tif", tmp_path / "album.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        colorizer.colorize_file(tmp_path / "album.tif", tmp_path / "album-colour.tif")
    assert len(load_pages(tmp_path / "album-colour.tif")) == 2


def test_wide_pillow_modes_keep_the_photos_lightness(colorizer):
    """Mode I and F images made from 8-bit ones (Pillow's convert) are read on the 8-bit scale,
    not as dark 16-bit samples or stretched to full contrast."""
    dark = _grey() // 3  # 0..85
    reference = np.asarray(colorizer.colorize(Image.fromarray(dark))).astype(float).mean()
    for mode in ("I", "F"):
        wide = np.asarray(colorizer.colorize(Image.fromarray(dark).convert(mode))).astype(float).mean()
        assert abs(wide - reference) < 1.0, mode
    sixteen = Image.fromarray(dark.astype(np.int32) * 257)  # mode I holding 16-bit samples
    assert abs(np.asarray(colorizer.colorize(sixteen)).astype(float).mean() - reference) < 1.0


def test_big_endian_arrays_are_read_like_native_ones(colorizer):
    wide = _grey().astype(np.uint16) * 257
    np.testing.assert_array_equal(colorizer.colorize(wide.astype(">u2")), colorizer.colorize(wide))


def test_hint_objects_are_checked_as_hint_text_is(colorizer):
    from colorize_cli.hints import Hint

    grey = np.full((40, 56), 128, np.uint8)
    for bad in (dict(reach=0), dict(reach=float("nan")), dict(rgb=(300, -5, 0)), dict(rgb=(1, 2)),
                dict(x=float("inf")), dict(x=-0.1), dict(x=1.5)):
        kwargs = dict(x=0.5, y=0.5, relative=True, rgb=(255, 0, 0), reach=0.3) | bad
        with pytest.raises(ValueError, match="hint"):
            Hint(**kwargs)
    listed = Hint(0.5, 0.5, True, [217, 99, 60])  # a list of numpy ints is a colour too
    assert listed.rgb == (217, 99, 60)
    np.testing.assert_array_equal(colorizer.colorize(grey, hints=listed),
                                  colorizer.colorize(grey, hints="50%,50%:#d9633c"))
    np.testing.assert_array_equal(colorizer.colorize(grey, hints=None), colorizer.colorize(grey))
    with pytest.raises(TypeError, match="hint"):
        colorizer.colorize(grey, hints=[b"1,1:red"])


def test_steps_a_model_cannot_use_are_refused_not_ignored(fake_registry, tiny_weights):
    with pytest.raises(ValueError, match="at most"):
        Colorizer(steps=10**6, device="cpu")
    with pytest.raises(ValueError, match="one step"):
        Colorizer(weights=tiny_weights["unet"], steps=7, device="cpu")
    assert Colorizer(weights=tiny_weights["unet"], steps=1, device="cpu").steps == 1


def test_devices_by_index_and_as_torch_devices(fake_registry):
    import torch

    assert Colorizer(device=torch.device("cpu")).engine.device.type == "cpu"
    for name in ("cuda:0", "cuda:7"):
        if torch.cuda.is_available() and int(name[5:]) < torch.cuda.device_count():
            continue
        with pytest.raises(ValueError, match=name):
            Colorizer(device=name)
    for bad in ("cpu:1", "tpu", "cuda:x"):
        with pytest.raises(ValueError, match="unknown device"):
            Colorizer(device=bad)


def test_a_truncated_pillow_image_is_an_image_error(colorizer):
    import io

    buf = io.BytesIO()
    Image.fromarray(_grey()).save(buf, format="PNG")
    with pytest.raises(ImageError, match="decoded"):
        colorizer.colorize(Image.open(io.BytesIO(buf.getvalue()[:-40])))


def test_empty_names_and_folders_are_refused_not_taken_for_the_current_folder(fake_registry, colorizer, tmp_path,
                                                                               monkeypatch):
    """An empty str is Path("."): as an output it wrote into the current folder, as a source (or ".")
    it failed inside pathlib, and model="" gave the default model; the command line refuses all three."""
    src = save_photo(tmp_path / "scan.png", "L")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="output is an empty path"):
        colorizer.colorize_file(src, "")
    assert not (tmp_path / "scan-colorized.png").exists()
    with pytest.raises(ValueError, match="source is an empty path"):
        colorizer.colorize_file("")
    for folder in (".", "/"):
        with pytest.raises(ImageError, match="is a directory"):
            colorizer.colorize_file(folder)
    with pytest.raises(ValueError, match="model is empty"):
        Colorizer(model="", device="cpu")


def test_a_trailing_separator_names_a_folder_as_the_command_lines_does(colorizer, tmp_path):
    src = save_photo(tmp_path / "scan.png", "L")
    assert colorizer.colorize_file(src, f"{tmp_path / 'scans.2024'}/") == tmp_path / "scans.2024" / "scan-colorized.png"


def test_hints_made_in_python_are_recorded_in_the_note(colorizer, tmp_path):
    from colorize_cli.hints import Hint

    src = save_photo(tmp_path / "scan.png", "L")
    out = colorizer.colorize_file(src, tmp_path / "out.png", hints=[Hint(0.5, 0.25, True, (178, 34, 34), 0.1)])
    assert "hint 50%,25%:#b22222:10%, source" in Image.open(out).info["Software"]


def test_a_pillow_image_closed_before_its_pixels_were_read_is_a_clear_error(tmp_path, tiny_weights):
    path = tmp_path / "p.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(path)
    with Image.open(path) as closed:
        pass
    with pytest.raises(ValueError, match="closed before"):  # it was a bare AssertionError
        Colorizer(weights=tiny_weights["unet"], device="cpu").colorize(closed)
