"""Colouring from Python: the engine behind the command line, for notebooks and pipelines.

    from colorize_cli import Colorizer

    colorizer = Colorizer()                          # the bundled default model, on the best device
    colour = colorizer.colorize(Image.open("photo.jpg"))     # a Pillow image in, a Pillow image out
    array = colorizer.colorize(grey_array)           # numpy (H, W), (H, W, 3) or (H, W, 4) in; RGB(A) out
    colorizer.colorize_file("scan.tif", "scan-colour.tif")  # what `colorize scan.tif -o ...` does

Settings are fixed per `Colorizer` (as per command line) and checked when it is made; the seed
and sample index pick the random stream, so the same call gives the same picture. In-memory
images are taken as their pixels stand (no EXIF orientation: use `ImageOps.exif_transpose`, or
`colorize_file`, which reads files exactly as the command line does and writes them atomically
with their metadata).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .errors import UsageError
from .hints import Hint, PaintedHint, parse_hint
from .imageio import ImageError, decode_pillow_image, output_format, to_uint8
from .pipeline import Engine

ImageLike = Union[Image.Image, np.ndarray]
HintLike = Union[str, Hint, PaintedHint]
# How far float pixels may stray outside 0..1 (rounding in the caller's own processing) before
# they are taken for another scale rather than clipped.
_FLOAT_SLACK = 1 / 255


class Colorizer:
    """A loaded model with its settings. `model` names a registry model (`colorize models list`),
    `weights` any colorize safetensors file; the others are the command line's options of the
    same names (None: the model's own default). ValueError for settings the model cannot use;
    `colorize_cli.weights.WeightsError` when the weights are missing, corrupt or not a model."""

    def __init__(self, model: str | None = None, *, weights: str | os.PathLike | None = None,
                 device: str = "auto", sampler: str | None = None, steps: int | None = None,
                 size: int | None = None, saturation: float | None = None, seed: int = 0,
                 local_files_only: bool = False) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, not {seed!r}")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model is a registry name such as 'unet', not {type(model).__name__}")
        if model == "":  # (an unset variable) not the default model in silence: the command line refuses it too
            raise UsageError("model is empty: give a registry name such as 'unet', or None for the default")
        weights = None if weights is None else _path_argument("weights", weights)
        self.engine = Engine.load(model, weights, device, local_files_only=local_files_only, prefix="")
        self.sampler, self.steps, self.size, self.saturation = self.engine.resolve_settings(
            sampler, steps, size, saturation, prefix="")
        self.seed = int(seed)

    @property
    def model_name(self) -> str:
        return self.engine.name

    def __repr__(self) -> str:
        return (f"Colorizer(model={self.engine.name!r}, device={str(self.engine.device)!r}, sampler={self.sampler!r}, "
                f"steps={self.steps}, size={self.size}, saturation={self.saturation:g}, seed={self.seed})")

    def colorize(self, image: ImageLike, *, hints: Sequence[HintLike] | HintLike | None = (),
                 sample: int = 0) -> ImageLike:
        """One image, as a Pillow image or a numpy array; returns the same kind (see `colorize_many`)."""
        return self.colorize_many([image], hints=hints, samples=[sample])[0]

    def colorize_many(self, images: Sequence[ImageLike], *, hints: Sequence[HintLike] | HintLike | None = (),
                      samples: Sequence[int] | None = None, batch_size: int = 8) -> list[ImageLike]:
        """Colour several images (batched where their working shapes match).

        Pillow images come back as RGB (RGBA when they had alpha), 8 bits. numpy arrays come back
        in their own dtype and layout: uint8 or uint16 0..max, or float 0..1 (as float32); (H, W)
        grey gives (H, W, 3), a fourth channel is kept as alpha. `hints` (`"45%,80%:#d9633c"` as
        `--hint` takes them, `Hint`s, or the colours of a painted hint image,
        `hint_image.read_hint_image(path, prefix="")`) apply to every image; `samples[i]` picks image i's
        random stream for the diffusion models (default 0). ValueError for arrays and hints it
        cannot use; `ImageError` for a Pillow image whose file is truncated or damaged.
        """
        if isinstance(images, (np.ndarray, Image.Image, str, bytes, os.PathLike)):
            raise TypeError("colorize_many takes a list of images; colorize() takes one")
        parsed = _parse_hints(hints)
        decoded = [_to_pixels(image) for image in images]
        for pixels, _, _ in decoded:
            for hint in parsed:
                hint.check_fits(pixels.shape[1], pixels.shape[0])  # ValueError when outside / unlike this image
        outs = self.engine.colorize_pixels(
            [pixels for pixels, _, _ in decoded], sampler=self.sampler, steps=self.steps, size=self.size,
            saturation=self.saturation, seeds=[self.seed] * len(decoded), samples=samples,
            hints=[parsed] * len(decoded), batch_size=batch_size)
        return [_from_pixels(out, alpha, kind) for out, (_, alpha, kind) in zip(outs, decoded)]

    def colorize_file(self, source: str | os.PathLike, output: str | os.PathLike | None = None, *,
                      hints: Sequence[HintLike] | HintLike | None = (), overwrite: bool = False,
                      keep_metadata: bool = True) -> Path:
        """Colour an image file as `colorize SOURCE -o OUTPUT` does (orientation, colour profile,
        16 bits, metadata and the provenance note; written atomically, never over the input).
        `output` defaults to `NAME-colorized.png` beside the source; a folder (one that exists, or
        a name without an extension, made if needed) gets `NAME-colorized.png` inside it, as `-o`
        does. A multi-page TIFF has every page coloured into a TIFF output; into any other format,
        only the first (a UserWarning says so). A str `output` ending in a separator names a
        folder whatever its dots (`"scans.2024/"`), as `-o` does. Returns the output's path; raises
        the error the command line reports (ImageError, OutputExistsError, ...)."""
        from .batch import Job, fitted_name, run_jobs

        source = _path_argument("source", source)
        if source.is_dir():  # before naming an output after it: "." and "/" have no name to take
            raise ImageError(f"Cannot read {source}: it is a directory, not an image.")
        # colorize's own names are cut to fit a file system (a long photo name plus "-colorized")
        target = (_path_argument("output", output) if output is not None
                  else fitted_name(source.with_name(f"{source.stem}-colorized.png")))
        named = output is not None  # a file the caller named: overwrite=True may replace whatever is there
        # (Path drops a trailing separator, so it is read from the caller's str)
        to_folder = isinstance(output, str) and output.endswith(("/", os.sep))
        if target.is_dir() or not target.suffix or to_folder:
            target, named = fitted_name(target / f"{source.stem}-colorized.png"), False
        output_format(target)  # an extension no format has: say so before colouring
        parsed = _parse_hints(hints)
        (result,) = run_jobs(self.engine, [Job(source, [target], named=named)], sampler=self.sampler, steps=self.steps,
                             size=self.size, seed=self.seed, samples=1, saturation=self.saturation, batch_size=1,
                             overwrite=overwrite, skip_existing=False, keep_metadata=keep_metadata, hints=parsed)
        if result.status == "failed":
            raise result.error if result.error is not None else RuntimeError(result.reason)
        if result.pages_coloured < result.pages:  # as the command line's note
            warnings.warn(f"{source} has {result.pages} pages; only the first was coloured, as "
                          f"{target.suffix} holds one page (a .tif output gets every page)", stacklevel=2)
        return target


def _path_argument(name: str, value) -> Path:
    """A file argument as a Path; TypeError naming the argument for anything else."""
    if isinstance(value, bytes):
        raise TypeError(f"{name} must be a str or os.PathLike path, not bytes (os.fsdecode turns bytes into one)")
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    if os.fspath(value) == "":  # Path("") is "." (the current folder): an unset variable, most likely
        raise UsageError(f"{name} is an empty path")
    return Path(value)


def _parse_hints(hints: Sequence[HintLike] | str | None) -> list[Hint | PaintedHint]:
    if hints is None:
        return []
    if isinstance(hints, (str, Hint, PaintedHint)):  # one hint given on its own
        hints = [hints]
    if not isinstance(hints, (list, tuple)):
        raise TypeError(f"hints is a hint string such as '45%,80%:#d9633c', a Hint, or a list of them (a painted "
                        f"hint image's: colorize_cli.hint_image.read_hint_image(path)), not {type(hints).__name__}")
    parsed = []
    for hint in hints:
        if not isinstance(hint, (str, Hint, PaintedHint)):
            raise TypeError(f"a hint is a string such as '45%,80%:#d9633c', a Hint, or one of the PaintedHints "
                            f"of colorize_cli.hint_image.read_hint_image(path), not {type(hint).__name__}")
        parsed.append(parse_hint(hint, prefix="") if isinstance(hint, str) else hint)
    return parsed


def _to_pixels(image: ImageLike) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """(H, W, 3) uint8/uint16 pixels, alpha or None, and how to give the result back."""
    if isinstance(image, Image.Image):
        try:
            pixels, alpha, _ = decode_pillow_image(image)
        except (OSError, SyntaxError) as e:  # Pillow's words for a truncated or damaged file
            raise ImageError(f"the image cannot be decoded: {e}") from e
        except AssertionError as e:  # Pillow's bare assert when a file-backed image was closed unread
            raise ValueError("Pillow cannot read this image's pixels: was it closed before they were "
                             "loaded? Call .load() inside the `with Image.open(...)` block") from e
        return pixels, alpha, ("pil",)
    if isinstance(image, (str, bytes, os.PathLike)):
        raise TypeError("colorize() takes an image (a numpy array or a Pillow image), not a path; "
                        "for a file, use colorize_file()")
    array = np.asarray(image)  # (anything numpy can read as an array of numbers)
    if array.dtype == object or array.ndim == 0:
        raise TypeError(f"an image is a numpy array or a Pillow image, not {type(image).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    dtype = array.dtype
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        dtype = dtype.newbyteorder("=")  # big-endian samples come back in the machine's order
        work = array.astype(dtype, copy=False)
    elif np.issubdtype(dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("the image holds NaN or infinite values")
        wide = array.astype(np.float64)  # float16 cannot hold 65535
        low, high = float(wide.min()), float(wide.max())
        if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:  # clipped, 0..255 floats would come out white
            raise ValueError(f"float pixels must lie within 0..1, these span {low:g}..{high:g} "
                             "(for 0..255 values, pass uint8 or divide by 255)")
        work = np.round(np.clip(wide, 0.0, 1.0) * 65535).astype(np.uint16)  # floats: 0..1
    else:
        raise ValueError(f"expected uint8, uint16 or float (0..1) pixels, not {dtype}")
    alpha = work[:, :, 3].copy() if work.ndim == 3 and work.shape[2] == 4 else None
    rgb = np.repeat(work[:, :, None], 3, axis=2) if work.ndim == 2 else work[:, :, :3]
    return np.ascontiguousarray(rgb), alpha, ("array", dtype)


def _from_pixels(out: np.ndarray, alpha: np.ndarray | None, kind: tuple) -> ImageLike:
    if kind[0] == "pil":
        result = Image.fromarray(to_uint8(out))
        if alpha is not None:
            result.putalpha(Image.fromarray(to_uint8(alpha)))
        return result
    dtype = kind[1]
    if alpha is not None:
        out = np.concatenate([out, alpha[:, :, None]], axis=2)
    if np.issubdtype(dtype, np.floating):
        return (out.astype(np.float32) / 65535.0).astype(np.float32)
    return out
