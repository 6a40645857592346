"""Fit a colour-strength profile (lightness × hue, optionally × predicted chroma) for `color.saturate` on a development set.

    colorize bench ../shared/data/eval/bsds-val --models unet --saturation 1 --metrics deltae,cf --out runs/hue-bsds
    colorize bench ../shared/data/eval/imagenet1k-256 --models unet --saturation 1 --metrics deltae,cf --out runs/hue-in964
    python benchmarks/fit_strength_profile.py runs/hue-bsds/cache/unet-* ../shared/data/eval/bsds-val \\
        --test runs/hue-in964/cache/unet-* ../shared/data/eval/imagenet1k-256 --out runs/profiles.json

`hue_gain.py` showed, with hard classes fitted on one set and scored on another, that a strength
per predicted hue and lightness buys colourfulness for less CIEDE2000 than one strength for all.
A product cannot use hard classes: a pixel's strength would jump where its hue crosses a class
edge. This fits the smooth table `saturate(..., profile=)` interpolates, by gradient descent on
the cached colourings (made at saturation 1) of the development set, half size, for each λ of a
sweep: minimise mean CIEDE2000 − λ · mean colourfulness + a smoothness penalty on neighbouring
nodes. Each fitted profile is then scored after the fact on the full-size 8-bit colourings of the
development set and, with `--test`, of a second set (as `strength_oracle.py` scores: the model's
a*b* read back from its 8-bit output, so close to, not equal to, `colorize bench`). Both the fit
and the scores map out-of-gamut colours back as the product does (`upsample.gamut_map`); until
2026-11-28 they clipped them per channel, which overstated what strong settings add.

The profile is stored normalised to a mean node weight of 1, with the strength that goes with it:
`1 + (saturation - 1) * w` per pixel, so `--saturation 1` still means "as the model predicts".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.bench.metrics import LPIPS, ciede2000, colourfulness, mean_ciede2000  # noqa: E402
from colorize_cli.bench.runner import cached_colourings  # noqa: E402
from colorize_cli.color import AB_MAX, AB_MIN, SATURATION_KNEE, lab_to_rgb, rgb_to_lab, saturate  # noqa: E402
from colorize_cli.upsample import gamut_map  # noqa: E402
from hue_gain import read_lab  # noqa: E402  (its folder is on the path when run as a script)


def load_pairs(pairs, reduce: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(output Lab, truth Lab) per photo, each (3, H, W) at 1/`reduce` size."""
    return [(read_lab(output, reduce), read_lab(truth, reduce)) for output, truth in pairs]


def stacks(pairs):
    """Photos of one shape batched together: [(output Lab (N, 3, H, W), truth Lab)]; portraits turned."""
    groups: dict[tuple[int, int], list] = {}
    for o, t in pairs:
        if o.shape[1] > o.shape[2]:
            o, t = o.transpose(1, 2), t.transpose(1, 2)
        groups.setdefault(tuple(o.shape[1:]), []).append((o, t))
    return [(torch.stack([o for o, _ in g]), torch.stack([t for _, t in g])) for g in groups.values()]


def soft_colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk's M3 per image of (N, 3, H, W) sRGB in [0, 1], as `metrics.colourfulness`."""
    rgb = rgb.flatten(2) * 255
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    spread = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False) + 1e-6)
    return spread + 0.3 * torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2 + 1e-6)


def in_gamut(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """ab (N, 2, H, W) as the full-resolution composition shows it: out-of-sRGB pixels lose chroma
    until they fit (`upsample.gamut_map`). Those sit on the gamut's edge whatever their strength, so
    they pass no gradient back to it; in-gamut pixels pass theirs unchanged."""
    with torch.no_grad():
        clamped = ab.clamp(AB_MIN, AB_MAX)
        mapped = gamut_map(L.transpose(0, 1), clamped.transpose(0, 1)).transpose(0, 1)
        inside = (mapped == ab).all(1, keepdim=True)
    return torch.where(inside, ab, mapped)


def objective(batches, profile, saturation, lam, knee=SATURATION_KNEE, perceptual=None):
    """(mean ΔE00, mean CF, the loss): ΔE00 − λ·CF, plus weight·LPIPS with `perceptual` (module, weight)."""
    de_sum, cf_sum, lp_sum, n = 0.0, 0.0, 0.0, 0
    for out, truth in batches:
        ab = in_gamut(out[:, :1], saturate(out[:, 1:], saturation, knee, L=out[:, :1], profile=profile))
        rgb = lab_to_rgb(torch.cat([out[:, :1], ab], 1))
        if rgb.requires_grad:  # CIEDE2000's hue angles have no gradient at exact grey: count none there
            rgb.register_hook(lambda g: torch.nan_to_num(g, nan=0.0))
        de_sum = de_sum + ciede2000(rgb_to_lab(rgb), truth).mean((1, 2)).sum()
        cf_sum = cf_sum + soft_colourfulness(rgb).sum()
        if perceptual is not None:
            with torch.no_grad():
                truth_rgb = lab_to_rgb(truth)
            lp_sum = lp_sum + perceptual[0](rgb, truth_rgb).sum() * perceptual[1]
        n += len(out)
    return de_sum / n, cf_sum / n, (de_sum + lp_sum) / n - lam * cf_sum / n


def weights(raw: torch.Tensor) -> torch.Tensor:
    """The profile of raw parameters: softplus, and with a chroma axis a running sum along it, so the
    weights never fall with chroma (`color.check_strength_profile`)."""
    w = F.softplus(raw) / F.softplus(torch.zeros(()))
    return w if raw.dim() == 2 else w.cumsum(2)


def start_raw(shape) -> torch.Tensor:
    """Parameters whose profile is 1 everywhere (a chroma axis: 1 at zero chroma, then small steps up)."""
    raw = torch.zeros(shape)
    if len(shape) == 3:
        raw[..., 1:] = -3.0
    return raw


def fit(batches, saturation, lam, shape, smooth, iters, start=None, fit_knee=False, perceptual=None):
    """(raw parameters to warm-start the next λ from, the profile, the knee)."""
    raw, log_knee = (start_raw(shape), torch.zeros(())) if start is None else (start[0].clone(), start[1].clone())
    raw.requires_grad_(True)
    log_knee.requires_grad_(fit_knee)
    opt = torch.optim.Adam([raw, log_knee] if fit_knee else [raw], lr=0.1)
    for _ in range(iters):
        profile = weights(raw)
        *_, loss = objective(batches, profile, saturation, lam, SATURATION_KNEE * log_knee.exp(), perceptual)
        # neighbours in hue (circularly) and in lightness; along chroma the weights only rise
        penalty = (profile - profile.roll(1, dims=1)).pow(2).sum() + (profile[1:] - profile[:-1]).pow(2).sum()
        opt.zero_grad()
        (loss + smooth * penalty).backward()
        opt.step()
    return (raw.detach(), log_knee.detach()), weights(raw).detach(), float(SATURATION_KNEE * log_knee.exp())


def score(pairs, saturation, profile, knee=SATURATION_KNEE, lpips_net=None):
    """Mean CIEDE2000, mean CF of the outputs and of the truths, at full size on 8-bit outputs, and
    with `lpips_net` (the bench's LPIPS) their mean LPIPS, else None."""
    de, cf, cf_truth, lp = [], [], [], []
    for output, truth_path in pairs:
        truth = np.asarray(Image.open(truth_path).convert("RGB"))
        lab = read_lab(output)
        ab = in_gamut(lab[None, :1], saturate(lab[None, 1:], saturation, knee, L=lab[None, :1], profile=profile))[0]
        rgb = (lab_to_rgb(torch.cat([lab[:1], ab])).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        de.append(mean_ciede2000(rgb, truth))
        cf.append(colourfulness(rgb))
        cf_truth.append(colourfulness(truth))
        if lpips_net is not None:
            with torch.no_grad():
                lp.append(float(lpips_net(*(torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 255
                                            for im in (rgb, truth)))))
    return float(np.mean(de)), float(np.mean(cf)), float(np.mean(cf_truth)), (float(np.mean(lp)) if lp else None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="the development set's bench cache (colourings at saturation 1)")
    p.add_argument("truth", type=Path)
    p.add_argument("--test", type=Path, nargs=2, metavar=("CACHE", "TRUTH"), help="a second set to score on")
    p.add_argument("--saturation", type=float, default=4.0, help="the strength the profile is fitted at")
    p.add_argument("--lambdas", default="0.02,0.04,0.06,0.08")
    p.add_argument("--hue-nodes", type=int, default=12)
    p.add_argument("--l-nodes", type=int, default=3)
    p.add_argument("--c-nodes", type=int, default=1, help="predicted-chroma nodes (1: no chroma axis)")
    p.add_argument("--smooth", type=float, default=0.01, help="penalty on neighbouring nodes' difference")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--fit-knee", action="store_true", help="fit saturate's knee too (one number)")
    p.add_argument("--reduce", type=int, default=2, help="fit on photos shrunk by this factor (speed)")
    p.add_argument("--lpips", type=float, default=0.0,
                   help="weight of LPIPS-alex (at the fit's size) in the loss")
    p.add_argument("--score-lpips", action="store_true", help="score LPIPS-alex too (as the bench: at 256 px)")
    p.add_argument("--uniform", default="", help="also score one strength for all at these, e.g. 2,3,4")
    p.add_argument("--out", type=Path, help="JSON with each fitted profile and its scores")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dev_pairs = cached_colourings(args.cache, args.truth)
    test_pairs = cached_colourings(*args.test) if args.test else []
    if not dev_pairs or (args.test and not test_pairs):
        raise SystemExit("a cache holds no colouring of its set's photos")
    batches = stacks(load_pairs(dev_pairs, args.reduce))
    lpips_net = LPIPS("alex") if args.score_lpips else None
    perceptual = (LPIPS("alex", size=None).requires_grad_(False), args.lpips) if args.lpips > 0 else None
    results = []
    sets = [("dev", dev_pairs)] + ([("test", test_pairs)] if test_pairs else [])
    for s in [float(v) for v in args.uniform.split(",") if v]:
        row = {"uniform": s}
        for name, pairs in sets:
            de, cf, cft, lp = score(pairs, s, None, lpips_net=lpips_net)
            row[name] = {"deltae": de, "cf": cf, "dcf": cft - cf, "lpips": lp}
        results.append(row)
        print(json.dumps(row), flush=True)
    raw = None
    shape = (args.l_nodes, args.hue_nodes) + ((args.c_nodes,) if args.c_nodes > 1 else ())
    for lam in [float(v) for v in args.lambdas.split(",")]:
        raw, profile, knee = fit(batches, args.saturation, lam, shape, args.smooth,
                                 args.iters, raw, args.fit_knee, perceptual)
        mean = float(profile.mean())
        row = {"lambda": lam, "saturation": 1 + (args.saturation - 1) * mean, "knee": knee,
               "profile": (profile / mean).round(decimals=3).tolist()}
        for name, pairs in sets:
            de, cf, cft, lp = score(pairs, args.saturation, profile, knee, lpips_net)
            row[name] = {"deltae": de, "cf": cf, "dcf": cft - cf, "lpips": lp}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
