"""Copy a weights file with inference settings of its config changed, to bench them side by side.

    python benchmarks/with_settings.py runs/unet-bins/unet.safetensors /tmp/T0.3.safetensors --set temperature=0.3
    colorize bench DATA --models /tmp/T0.3.safetensors,...

Only settings that change how a trained network is *used* may be set (the bins head's
annealed-mean temperature and the share of training's colour rebalancing it keeps, the chroma
gain `saturation` and its lightness × hue (× chroma) `strength_profile`, the default working size, sampler
and steps); the weights are copied unchanged. Values are parsed as JSON (numbers, strings in quotes or bare).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.weights import load_model_file, save_model_file  # noqa: E402

SETTINGS = ("temperature", "rebalance", "saturation", "strength_profile", "size", "default_sampler", "default_steps")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"one of {', '.join(SETTINGS)}")
    args = p.parse_args(argv)

    state, config = load_model_file(args.source)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in SETTINGS:
            p.error(f"cannot set {key!r}; settable: {', '.join(SETTINGS)}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    # The file holds fp16 (or integer) tensors already: write them back as they came.
    save_model_file(args.target, state, config)
    print(args.target)


if __name__ == "__main__":
    main()
