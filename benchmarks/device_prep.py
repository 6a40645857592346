"""Prepare what a GPU call of `benchmarks/device_train.sh` carries, from a fresh checkout, and check
that it fits the device tool's 64 MiB upload.

The folders it fills are git-ignored and nothing keeps them between sessions (a session may start
from a bare clone, without `runs/` either), so the next GPU session runs this first:

    python benchmarks/device_prep.py --shard tiny64-4 --shard tiny64-0
    python benchmarks/device_prep.py --shard tiny64-1 --init ddpm=runs/gpu-1128/lab-ddpm.safetensors \
        --blob ddpm=runs/gpu-1128/ddpm.compile.part00

  .devwhl/   the kornia wheel of the version installed here (`pip download`, from the local index)
  .devdata/  exactly the named shards, gzipped (a tiny64 shard: 27 -> 14 MB); older ones are removed,
             since everything in the folder travels
  .devinit/  NAME.safetensors for each --init, with its encoder (then the bundled lab-ddpm, only
             device_train.sh's encoder donor, may stay behind), and NAME.compile.partNN per --blob

It then adds up the upload: the tracked tree, untracked files git does not ignore (they travel
too) and the carried folders, against 64 MiB, and says which bundled file to move aside if the sum
is over.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colorize_cli.atomic import temp_path_beside  # noqa: E402
UPLOAD_LIMIT = 64 * 2**20
CARRIED = (".devwhl", ".devdata", ".devinit", ".devvgg")


def _fresh(folder: Path) -> Path:
    """Empty `folder`: whatever is in a carried folder travels, so stale files cost upload."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def _write_atomically(dst: Path, write) -> None:
    part = temp_path_beside(dst)
    try:
        write(part)
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)


def kornia_wheel() -> Path:
    version = importlib.metadata.version("kornia")
    folder = ROOT / ".devwhl"
    wheel = folder / f"kornia-{version}-py3-none-any.whl"
    if not wheel.is_file():
        _fresh(folder)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder),
                        f"kornia=={version}"], check=True)
    if not wheel.is_file():
        raise SystemExit(f"Error: pip did not download {wheel.name}")
    return wheel


def gzip_shards(names: list[str], data_root: Path) -> list[Path]:
    sources = [data_root / (name if name.endswith(".tar") else f"{name}.tar") for name in names]
    missing = [src for src in sources if not src.is_file()]
    if missing:  # before the folder is emptied: a typo keeps what was there
        raise SystemExit(f"Error: no shard {missing[0]}")
    folder = _fresh(ROOT / ".devdata")
    out = []
    for src in sources:
        dst = folder / f"{src.name}.gz"

        def write(part: Path, src: Path = src) -> None:
            with open(src, "rb") as fin, gzip.open(part, "wb", compresslevel=6) as fout:
                shutil.copyfileobj(fin, fout, 2**20)
        _write_atomically(dst, write)
        out.append(dst)
    return out


def init_export(run: str, path: Path) -> Path:
    """Copy an export for `run` into .devinit, as it is: with its encoder, so the bundled lab-ddpm
    (device_train.sh's donor for an export without one) can stay behind to fit the upload."""
    import json
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["colorize.config"])
        has_encoder = any(k.startswith("encoder.") for k in f.keys())
    dst = ROOT / ".devinit" / f"{run}.safetensors"
    _write_atomically(dst, lambda part: shutil.copyfile(path, part))
    note = ("needs colorize_cli/weights/lab-ddpm.safetensors on the machine for its encoder"
            if config.get("encoder") and not has_encoder else "self-contained")
    print(f".devinit/{dst.name}: {dst.stat().st_size / 1e6:.1f} MB ({note})")
    return dst


def _git_files(*args: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, check=True,
                           capture_output=True).stdout.split(b"\0")
    return [ROOT / os.fsdecode(n) for n in names if n]


def upload_size() -> dict[str, int]:
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())
    parts = {"tracked tree": size(_git_files()),
             "untracked, not ignored": size(_git_files("--others", "--exclude-standard"))}
    for name in CARRIED:
        folder = ROOT / name
        if folder.is_dir():
            parts[name] = size(folder.rglob("*"))
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard", action="append", default=[], help="a shard of --data-root, e.g. tiny64-4")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--init", action="append", default=[], metavar="RUN=FILE",
                        help="an export to continue from, for device_train.sh's run RUN (ddpm, gan, ...)")
    parser.add_argument("--blob", action="append", default=[], metavar="RUN=PART",
                        help="a torch.compile blob part an earlier call sent back (RUN.compile.partNN)")
    args = parser.parse_args(argv)

    wheel = kornia_wheel()
    print(f".devwhl/{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB")
    if args.shard:
        for shard in gzip_shards(args.shard, args.data_root):
            print(f".devdata/{shard.name}: {shard.stat().st_size / 1e6:.1f} MB")
    if args.init or args.blob:
        with tempfile.TemporaryDirectory() as held:  # the sources may lie in .devinit itself
            inits, blobs = [], []
            for spec in args.init:
                run, _, path = spec.partition("=")
                inits.append((run, Path(shutil.copy(path, Path(held) / f"init-{run}"))))
            for spec in args.blob:
                run, _, path = spec.partition("=")
                name = Path(path).name  # as it came back (RUN.compile.partNN), or joined (RUN.compile)
                suffix = name.rpartition(".compile.")[2] if ".compile." in name else "part00"
                blobs.append((Path(shutil.copy(path, Path(held) / f"blob-{run}-{suffix}")), f"{run}.compile.{suffix}"))
            _fresh(ROOT / ".devinit")
            for run, path in inits:
                init_export(run, path)
            for path, name in blobs:
                shutil.copyfile(path, ROOT / ".devinit" / name)

    parts = upload_size()
    total = sum(parts.values())
    for name, n in parts.items():
        print(f"  {name:24s} {n / 1e6:6.1f} MB")
    print(f"  {'upload':24s} {total / 1e6:6.1f} MB of {UPLOAD_LIMIT / 1e6:.1f} "
          "(every .dev* folder there is counted: remove one the call does not carry)")
    if total > UPLOAD_LIMIT:
        over = (total - UPLOAD_LIMIT) / 1e6
        print(f"Error: {over:.1f} MB over the upload limit. Runs that start from a .devinit export with "
              f"its encoder do not need the bundled lab-ddpm: move colorize_cli/weights/lab-ddpm.safetensors "
              f"aside for the call (and back right after it), or carry one shard fewer.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
