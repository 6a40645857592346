"""Running many images through the engine: planning outputs, overlapping I/O with model work,
and a per-file report. Used by both the default command and `colorize batch`.

Loading runs ahead of the model in a thread pool (Pillow decoding releases the GIL) and saving
runs behind it, so the model is rarely waiting on the disk. A failure in one file is recorded
and the run goes on.
"""

from __future__ import annotations

import functools
import hashlib
import os
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import remove_stale_temps
from .errors import UsageError, is_out_of_memory
from .imageio import (IMAGE_EXTENSIONS, has_no_extension, LoadedImage, OutputError, OutputExistsError, SameFileError, check_output_size,
                      load_image, opens_as_image, output_format, save_image)
from .paths import real_path

if TYPE_CHECKING:
    from .hints import Hint, PaintedHint
    from .metadata import ImageMetadata

# Pixels held around the model, each in its own place: the batch being filled, the loads running
# ahead of it, and the colourings waiting to be written. Four 12-MP photos batch as before;
# larger scans batch, load and wait fewer at a time, so a folder of 100-MP scans needs the memory
# of about two, not of eight (docs/benchmarks.md).
HELD_PIXELS = 48_000_000


@dataclass
class Job:
    source: Path
    outputs: list[Path]          # one per sample
    named: bool = False          # the user named the output file (-o FILE, an API target; one sample): whatever
                                 # is there may be replaced with --overwrite; at a name colorize made, only its own


@dataclass
class JobResult:
    source: Path
    status: str                  # done | skipped | failed
    outputs: list[Path] = field(default_factory=list)
    reason: str | None = None
    error: BaseException | None = None
    had_colour: bool = False     # the input was a toned or colour print, recoloured from its lightness
    pages: int = 1               # full-size pages of the input (a multi-page TIFF has several)
    pages_coloured: int = 1      # all of them into a TIFF output; only the first into other formats

    def to_json(self) -> dict:
        # What reading the photo tells (colour, pages) is known only for a file coloured in this run; a
        # skipped or failed one was not read (a skipped album must not read as one page, all of it done,
        # nor a skipped colour print as grey): null.
        done = self.status == "done"
        return {"source": str(self.source), "status": self.status, "outputs": [str(p) for p in self.outputs],
                "reason": self.reason, "had_colour": self.had_colour if done else None,
                "pages": self.pages if done else None,
                "pages_coloured": self.pages_coloured if done else None}


def sample_paths(output: Path, samples: int) -> list[Path]:
    """`out.png` for one sample; `out-1.png`, `out-2.png`, … for several."""
    if samples == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(1, samples + 1)]


def _both_cases(ch: str) -> str:
    """`a` -> `aA`; a character without a one-character other case (`1`, `ß`) stays alone."""
    other = ch.swapcase()
    return ch + other if len(other) == 1 and other != ch else ch


def case_insensitive_glob(pattern: str) -> str:
    """`*.jpg` -> `*.[jJ][pP][gG]`: scanners and cameras write SCAN_001.JPG as often as .jpg, and
    pathlib matches case-sensitively on every POSIX disk (macOS's case-insensitive one too).
    Letters inside a character class get both cases as well (`[a-c]` -> `[a-cA-C]`)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        end = -1
        if ch == "[":  # a `]` first in the class (after any `!`) belongs to it
            first = i + 1 + (pattern[i + 1:i + 2] == "!")
            end = pattern.find("]", first + (pattern[first:first + 1] == "]"))
        if end > 0:  # a class: its body, then both cases of each letter or letter range
            body = pattern[i + 1:end]
            neg = body[:1] == "!"
            items, j = [], int(neg)
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    items.append(f"{lo}-{hi}")
                    if len(_both_cases(lo)) == len(_both_cases(hi)) == 2 and lo.swapcase() <= hi.swapcase():
                        items.append(f"{lo.swapcase()}-{hi.swapcase()}")
                    j += 3
                else:
                    items.append(_both_cases(body[j]))
                    j += 1
            out.append("[" + "!" * neg + "".join(items) + "]")
            i = end + 1
        else:
            both = _both_cases(ch) if ch != "[" else "["
            out.append(f"[{both}]" if len(both) > 1 or ch == "[" else ch)
            i += 1
    return "".join(out)


def discover(root: Path, *, recursive: bool, pattern: str | None,
             not_images: list[Path] | None = None, overlooked: list[Path] | None = None) -> list[Path]:
    """Image files under `root` (sorted, hidden files skipped), optionally filtered by a glob
    (matched without regard to case).

    Broken links to images and subfolders that cannot be read are listed too: loading them
    fails, so the batch reports them instead of silently passing them over. A file the glob
    matches but whose extension is not an image's is taken only when it opens as an image;
    otherwise (a sidecar: IMG_0001.AAE, photo.xmp) it is appended to `not_images`. Without a
    glob, only image extensions are taken; where `overlooked` is given, the files without any
    extension (or a counter in its place) that open as images all the same (scans saved as
    `scan0001` or `scan.001`) are appended to it, so the batch can say so. Only their headers are
    read; other extensions are never opened (a camera's raw files would open as TIFFs).
    """
    if pattern is not None and pattern.rstrip("/").endswith("**"):  # pathlib's '**' lists folders only
        # (each folder is globbed on its own when recursive: there the trailing '**' is every file)
        pattern = pattern.rstrip("/")[:-2] + "*" if recursive else pattern.rstrip("/") + "/*"
    where = case_insensitive_glob(pattern) if pattern is not None else "*"
    found: set[Path] = set()
    try:
        paths = _glob_each_folder(root, where, found) if recursive else list(root.glob(where))
    except (NotImplementedError, ValueError, IndexError) as e:  # an absolute, empty or dot pattern
        why = "" if isinstance(e, IndexError) else f" ({e})"  # pathlib's IndexError for '.' says nothing useful
        raise UsageError(f"--glob {pattern!r}: give a pattern of file names relative to the folder, e.g. "
                         f"'*.tif'{why}") from None
    for path in paths:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if not (path.is_file() or (path.is_symlink() and not path.exists())):
                continue
        except OSError:  # e.g. a path longer than the system takes: loading it reports why
            found.add(path)
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS or (pattern is not None and not path.exists()):
            found.add(path)
        elif pattern is not None:
            if opens_as_image(path):
                found.add(path)
            elif not_images is not None:
                not_images.append(path)
        elif overlooked is not None and has_no_extension(path) and opens_as_image(path, unreadable=False):
            overlooked.append(path)
    return sorted(found)


def _glob_each_folder(root: Path, where: str, unreadable: set[Path]) -> list[Path]:
    """`root.rglob(where)`, folder by folder: a folder that cannot be listed or globbed (no
    permission, a path too long for the system) goes into `unreadable`, so the batch reports it
    and colours the rest; `rglob` would pass over the first without a word and stop at the second."""
    paths: list[Path] = []
    for folder, subfolders, _ in os.walk(root, onerror=lambda error: unreadable.add(Path(error.filename))):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]  # hidden: left out anyway
        try:
            paths.extend(Path(folder).glob(where))
        except OSError:
            unreadable.add(Path(folder))
    return paths


def plan_batch(root: Path, out_dir: Path, sources: list[Path], ext: str, samples: int,
               siblings: Sequence[Path] = ()) -> list[Job]:
    """Mirror `root`'s folder structure under `out_dir`: a/b/photo.jpg -> OUT/a/b/photo.png.

    Photos that would share an output (photo.jpg and photo.tif) all keep their own extension in
    the name (photo.jpg.png, photo.tif.png): see `distinct_targets`; a counter for an extension
    is kept always (scan.001 -> scan.001.png). `siblings`: the folder's
    other photos, not coloured this time (a `--glob` leaves them out) but named as if they were,
    so a photo's output name never depends on which photos a run selects.
    """
    named = sorted(set(sources) | set(siblings))
    rels = [src.relative_to(root) for src in named]
    # A counter in the extension's place (scan.001, a `--glob` match) is part of the photo's name.
    plain = [rel.with_name(rel.name + ext) if has_no_extension(rel) else rel.with_suffix(ext) for rel in rels]
    targets = dict(zip(named, distinct_targets([out_dir / p for p in plain],
                                               [out_dir / rel.with_name(rel.name + ext) for rel in rels])))
    return [Job(src, sample_paths(targets[src], samples)) for src in sources]


def distinct_targets(plain: list[Path], qualified: list[Path], identities: Sequence[str] | None = None) -> list[Path]:
    """Each source's output: its plain name (photo.png), unless another source would have the
    same, then its qualified one (photo.jpg.png, made from its full name, so unique).

    None of the sources that share a plain name gets it: a rerun skips the outputs that exist, so
    a plain name made when photo.tif was alone must never be taken for the colouring of a
    photo.jpg added later. A qualified name can be another source's plain name (photo.tif.png
    for photo.tif.jpg): that source is qualified too. Names that still differ only in case
    (Photo.jpg and photo.jpg), or in how an accent is composed, get a tag from the exact name too
    (Photo.jpg-1f3a9c.png): written to a case-insensitive disk (macOS, Windows, exFAT cards), one
    would replace the other.
    `identities` (one per source, default: its qualified output's name) is what a tag is made
    from: photos of the same name from different folders, coloured into one, need theirs to
    differ (a/photo.jpg -> photo.jpg-<tag of a/photo.jpg>.png, b/photo.jpg -> ...).
    """
    plain_keys = [_disk_key(p) for p in plain]
    qualified_keys = [_disk_key(q) for q in qualified]
    owners: dict[str, int] = {}
    for key in plain_keys:
        owners[key] = owners.get(key, 0) + 1
    own = [False] * len(plain)
    changed = True
    while changed:
        changed = False
        claimed = {q for q, qualified_now in zip(qualified_keys, own) if qualified_now}
        for i, key in enumerate(plain_keys):
            if not own[i] and (owners[key] > 1 or key in claimed):
                own[i] = changed = True
    chosen = [q if qualified_now else p for p, q, qualified_now in zip(plain, qualified, own)]
    seen = {key: 1 for key, count in owners.items() if count > 1}  # a shared plain name stays nobody's:
    for key in (_disk_key(c) for c in chosen):  # a photo without extension ("a") qualifies to it ("a.png")
        seen[key] = seen.get(key, 0) + 1
    identities = [str(c) for c in chosen] if identities is None else identities
    return [fitted_name(_tagged(c, identity) if seen[_disk_key(c)] > 1 else c) for c, identity in zip(chosen, identities)]


# A file name's most bytes on common file systems (ext4, APFS, NTFS in UTF-16 units aside), less
# room for a sample's "-64".
NAME_BYTES = 255 - len("-64")


def fitted_name(path: Path) -> Path:
    """`path`, or where its name (a long photo name plus "-colorized" or a tag) is more than a file
    system takes, the name cut to fit with a tag of the whole name: the same on every rerun, so a
    resumed batch finds it, and apart from another long name that begins alike."""
    if len(os.fsencode(path.name)) <= NAME_BYTES:
        return path
    tag = hashlib.sha1(path.name.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    stem, suffix = path.stem, path.suffix
    head, tail = stem[:-16], stem[-16:]  # the cut comes out of the middle: "-colorized" or a tag stays
    while head and len(os.fsencode(f"{head}~{tag}{tail}{suffix}")) > NAME_BYTES:
        head = head[:-1]
    return path.with_name(f"{head}~{tag}{tail}{suffix}")


def _disk_key(path: Path) -> str:
    """One key per file a disk may hold under several spellings: case-insensitive disks (macOS,
    Windows, exFAT cards) take Photo.jpg for photo.jpg, macOS also a composed é for a decomposed one."""
    return unicodedata.normalize("NFC", str(path)).lower()


def _tagged(path: Path, identity: str) -> Path:
    """photo.jpg.png -> photo.jpg-<6 hex of identity>.png: stable across reruns, so a resumed
    batch finds it again, and apart from a name that differs only in case."""
    tag = hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return path.with_name(f"{path.stem}-{tag}{path.suffix}")


def pages_to_colour(job: Job, image: LoadedImage) -> int:
    """How many pages of the job's input it colours: every page of a multi-page TIFF when its
    outputs are TIFFs (which hold pages), else the first (the run says so)."""
    return image.pages if all(output_format(p) == "TIFF" for p in job.outputs) else 1


def _prefetch(executor: ThreadPoolExecutor, jobs: list[Job], ahead: int,
              pixel_budget: int = 0) -> Iterator[tuple[Job, Future]]:
    """Yield (job, future of its loaded first page), loading ahead of the consumer: up to `ahead`
    images, and with a `pixel_budget` no more pixels than that, judged by the size of the image
    loaded last (at least one, so a folder of 100-MP scans holds one scan ahead, not `ahead`).
    Before the first image is in, one load runs: its size is not known yet."""
    pending: deque[tuple[Job, Future]] = deque()
    it = iter(jobs)
    last_pixels = 0

    def fill() -> None:
        if not pixel_budget:
            limit = ahead
        else:
            limit = max(1, min(ahead, pixel_budget // last_pixels)) if last_pixels else 1
        while len(pending) < limit:
            nxt = next(it, None)
            if nxt is None:
                return
            pending.append((nxt, executor.submit(load_image, nxt.source)))

    fill()
    while pending:
        job, fut = pending.popleft()
        if pixel_budget:
            try:
                last_pixels = _area(fut.result())
            except Exception:  # the consumer sees it through `fut`
                pass
        fill()
        yield job, fut


def _area(image: LoadedImage) -> int:
    return image.pixels.shape[0] * image.pixels.shape[1]


def triage(jobs: list[Job], *, overwrite: bool, skip_existing: bool) -> tuple[dict[int, JobResult], list[tuple[int, Job]]]:
    """Split jobs into those settled without the model (index -> result) and those to colour.

    An existing output is skipped when `skip_existing` (batch resume; a job with only some of
    its samples written colours the rest), refused otherwise unless `overwrite`. Outputs that two
    inputs would share are refused for the second one, and an output that is an input, always.
    """
    settled: dict[int, JobResult] = {}
    todo: list[tuple[int, Job]] = []
    claimed: dict[Path, Path] = {}
    inputs = {real_path(job.source): job.source for job in jobs}
    resolved = [[(p, real_path(p)) for p in job.outputs] for job in jobs]
    # The folders outputs go into (in/x.png/y.jpg -> OUT/x.png/y.png): no photo's output may be one of them.
    folders = {parent: job.source for job, outputs in zip(jobs, resolved) for _, r in outputs for parent in r.parents}
    for index, job in enumerate(jobs):
        try:
            result = _settle(job, resolved[index], inputs, claimed, folders, overwrite=overwrite,
                             skip_existing=skip_existing)
        except OSError as e:  # e.g. a name too long for the disk: this photo fails, the batch goes on
            err = OutputError(f"{job.source}: cannot write {job.outputs[0]}: {e.strerror or e}")
            result = JobResult(job.source, "failed", reason=str(err), error=err)
        if result is None:
            todo.append((index, job))
        else:
            settled[index] = result
    return settled, todo


def _settle(job: Job, resolved: list[tuple[Path, Path]], inputs: dict[Path, Path], claimed: dict[Path, Path],
            folders: dict[Path, Path], *, overwrite: bool, skip_existing: bool) -> JobResult | None:
    """The job's result if it is settled without the model (see `triage`), else None.
    `resolved`: its outputs with their real paths."""
    hit = next((p for p, r in resolved if r in inputs), None)
    if hit is not None:  # e.g. `colorize a.png a-colorized.png`: never write over an input
        err = SameFileError(f"{job.source}: refusing to write {hit}: it is an input of this run.")
        return JobResult(job.source, "failed", reason=str(err), error=err)
    clash = next(((p, r) for p, r in resolved if r in claimed), None)
    if clash is not None:
        err = OutputError(f"{job.source}: output {clash[0]} is also the output of {claimed[clash[1]]}")
        return JobResult(job.source, "failed", reason=str(err), error=err)
    folder = next(((p, r) for p, r in resolved if r in folders), None)
    if folder is not None:  # whichever were written first, the other could never be
        err = OutputError(f"{job.source}: {folder[0]} is also the folder the colouring of {folders[folder[1]]} goes "
                          "into; rename one of the two, or colour them in two runs with different -o")
        return JobResult(job.source, "failed", reason=str(err), error=err)
    # (a broken link too: replacing it would lose it) OSError for a name the disk cannot hold
    existing = [p for p in job.outputs if p.exists() or p.is_symlink()]
    for _, r in resolved:
        claimed[r] = job.source
    in_the_way = next((p for p in existing if p.is_dir()), None)
    if in_the_way is not None:  # never "skipped" (a resumed batch would never colour it), never replaced
        err = OutputError(f"{job.source}: a folder, {in_the_way}, is where its colouring goes")
        return JobResult(job.source, "failed", reason=str(err), error=err)
    if existing and not job.named:  # a name colorize made: only this photo's own colouring is done, or replaced
        foreign = _foreign_output(job, existing)
        if foreign is not None:
            err = _in_the_way(job, *foreign)
            return JobResult(job.source, "failed", reason=str(err), error=err)
    if existing and not overwrite:
        if skip_existing and len(existing) == len(job.outputs):
            return JobResult(job.source, "skipped", outputs=job.outputs, reason="output exists")
        if not skip_existing:
            err = OutputExistsError(f"{existing[0]} already exists; pass --overwrite to replace it "
                                    "(overwrite=True from Python).")
            return JobResult(job.source, "failed", reason=str(err), error=err)
    return None


# Output formats that cannot carry colorize's note: a file of theirs at an output's name is taken
# for an earlier colouring, as nothing can tell (README: batch).
NOTELESS_SUFFIXES = (".bmp",)


def not_its_colouring(path: Path, source: Path) -> str | None:
    """None if the file at `path` is colorize's colouring of `source`, else what it is instead, for
    a message. As far as its note tells: a colouring whose note names no source (colorize before
    2026-11-27) counts, and so does one whose source has the photo's stem, as output names come
    from the stem (`scan.jpg` renamed `scan.JPG` or `scan.jpeg` keeps its colouring), while
    `scan-1.png`, a `--samples` colouring of `scan.jpg`, is not taken for `scan-1.jpg`'s."""
    from .metadata import COLOURING_NOTE, note_source

    if path.is_dir():
        return "a folder"
    if not path.exists():
        return "a link to nothing"
    note = _note(path)
    if note is None or not note.startswith("colorize "):
        return None if path.suffix.lower() in NOTELESS_SUFFIXES else "a file colorize did not make"
    if COLOURING_NOTE not in note:
        return "a contact sheet colorize made"
    made_from = note_source(note)
    if made_from is None or _stem_key(made_from) == _stem_key(source.name):
        return None
    return f"colorize's colouring of another photo, {made_from}"


def _stem_key(name: str) -> str:
    """A file name's stem as a disk that ignores case and accent composition sees it."""
    return unicodedata.normalize("NFC", Path(name).stem).casefold()


def _note(path: Path) -> str | None:
    """The file's `Software` note, read once per version of the file (a run triages its outputs
    before loading the model and again before colouring)."""
    st = path.stat()
    return _note_of(os.path.abspath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


@functools.lru_cache(maxsize=1 << 16)
def _note_of(path: str, *version: int) -> str | None:
    """`version`: what tells one state of the file from another (device, inode, times, size)."""
    from .metadata import software_note

    return software_note(path)


def _foreign_output(job: Job, existing: Sequence[Path] | None = None) -> tuple[Path, str] | None:
    """The first of the job's existing outputs (`existing`, when the caller has looked already) that
    is not its photo's colouring, and what it is."""
    if existing is None:
        existing = [p for p in job.outputs if p.exists() or p.is_symlink()]
    for path in existing:
        why = not_its_colouring(path, job.source)
        if why:
            return path, why
    return None


def _in_the_way(job: Job, path: Path, what: str) -> OutputError:
    return OutputError(f"{job.source}: {path} is where its colouring goes, but it is {what}: not replaced "
                       "(move it, or write the colourings to another folder)")


def run_jobs(engine, jobs: list[Job], *, sampler: str | None, steps: int | None, size: int | None, seed: int,
             samples: int, saturation: float | None = None, batch_size: int, overwrite: bool, skip_existing: bool,
             keep_metadata: bool = True, hints: Sequence[Hint | PaintedHint] = (),
             on_result: Callable[[JobResult], None] | None = None,
             on_step: Callable[[int, int], None] | None = None,
             triaged: tuple[dict[int, JobResult], list[tuple[int, Job]]] | None = None) -> list[JobResult]:
    """Colour every job; return one result per job, in order (see `triage` for existing outputs;
    `triaged`: its answer for these jobs, when the caller has it already).

    Each output carries its source's metadata (only the resolution unless `keep_metadata`) and
    a note naming the model and settings. `hints` apply to every image (a hint outside a photo
    fails that file). `engine` may be None when `triage` leaves nothing to colour.

    First pages go through the model in batches. The further pages of a multi-page TIFF going
    into a TIFF are loaded, coloured and written one at a time while its file is written (in
    this thread, as the model runs here), so an album is never in memory whole.
    """
    results: dict[int, JobResult] = {}

    def finish(index: int, result: JobResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    settled, todo = triaged or triage(jobs, overwrite=overwrite, skip_existing=skip_existing)
    for index, result in settled.items():
        finish(index, result)
    remove_stale_temps(path for job in jobs for path in job.outputs)  # left by a killed earlier run

    index_of = {id(job): index for index, job in todo}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="load") as loader, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="save") as saver:
        # (job index, job, its saves, [had colour], pages, pages coloured); had colour is a list as
        # a multi-page save finds out about its later pages while it writes them
        saves: list[tuple[int, Job, list[Future], list[bool], int, int, int]] = []  # ..., output pixels
        batch: list[tuple[Job, LoadedImage]] = []  # a job and its first page

        def later_pages(job: Job, count: int, sample: int, had_colour: list[bool]) -> Iterator[tuple]:
            """Pages 2..count of the job's input, coloured, as (pixels, alpha, metadata), one at a time.

            Each page keeps its own metadata (resolution, text, XMP); its note names no hints, as
            hints are for the first page."""
            from .color import has_colour

            note = engine.provenance(sampler, steps, size, saturation, seed, sample, source=job.source.name)

            for number in range(1, count):
                page = load_image(job.source, page=number)
                had_colour[0] = had_colour[0] or (not page.was_grey and has_colour(page.pixels))
                (out,) = engine.colorize_pixels([page.pixels], sampler=sampler, steps=steps, size=size,
                                                saturation=saturation, seeds=[seed], samples=[sample], hints=[[]],
                                                batch_size=1, step_progress=on_step)
                yield out, page.alpha, labelled(page, note)

        def labelled(image: LoadedImage, note: str) -> ImageMetadata:
            """What an output of `image` (a page) carries: its metadata, or only its resolution, and the note."""
            return (image.metadata if keep_metadata else image.metadata.stripped()).with_software(note)

        def save_now(*args, **kwargs) -> Future:
            """Run `save_image` here and now, its outcome held in a Future like the saver's."""
            done: Future = Future()
            try:
                save_image(*args, **kwargs)
            except Exception as e:
                done.set_exception(e)
            else:
                done.set_result(None)
            return done

        def flush() -> None:
            if not batch:
                return
            pixels, seeds, sample_ids, owners, page_hints = [], [], [], [], []
            for job, image in list(batch):
                try:  # hints are for the first page (the photo they were given for)
                    for hint in hints:
                        hint.check_fits(image.pixels.shape[1], image.pixels.shape[0])
                except ValueError as e:
                    err = UsageError(f"{job.source}: {e}")
                    finish(index_of[id(job)], JobResult(job.source, "failed", reason=str(err), error=err))
                    batch[:] = [entry for entry in batch if entry[0] is not job]
                    continue
                for k in range(samples):
                    if skip_existing and not overwrite and job.outputs[k].exists():
                        continue  # a resumed batch keeps (and does not recolour) the samples already written
                    pixels.append(image.pixels)
                    seeds.append(seed)
                    sample_ids.append(k)
                    owners.append((job, k))
                    page_hints.append(hints)
            try:
                outs = engine.colorize_pixels(pixels, sampler=sampler, steps=steps, size=size, saturation=saturation,
                                              seeds=seeds, samples=sample_ids, hints=page_hints,
                                              batch_size=batch_size * samples,
                                              step_progress=on_step)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory: fail these files, go on
                why = ("out of memory colouring it (a smaller --batch-size or --size needs less)"
                       if is_out_of_memory(e) else str(e))
                for job, _ in batch:
                    finish(index_of[id(job)], JobResult(job.source, "failed", reason=f"{job.source}: {why}", error=e))
                batch.clear()
                return
            from .color import has_colour

            coloured = {(id(job), k): out for (job, k), out in zip(owners, outs)}
            for job, image in batch:
                count = pages_to_colour(job, image)
                had_colour = [not image.was_grey and has_colour(image.pixels)]  # and of the pages to come
                futures: list[Future] = []
                for k in range(samples):
                    if (id(job), k) not in coloured:
                        continue
                    note = engine.provenance(sampler, steps, size, saturation, seed, k, hints, source=job.source.name)
                    metadata = labelled(image, note)
                    save = (job.outputs[k], coloured[(id(job), k)], image.alpha)
                    options = dict(overwrite=overwrite, source=job.source, metadata=metadata)
                    if count > 1:  # the model runs in this thread: so does the writing that pulls pages through it
                        futures.append(save_now(*save, **options, more_pages=later_pages(job, count, k, had_colour)))
                    else:
                        futures.append(saver.submit(save_image, *save, **options))
                saves.append((index_of[id(job)], job, futures, had_colour, image.pages, count,
                              len(futures) * _area(image)))
            batch.clear()
            _collect(block=False)
            # Colourings waiting for the saver (behind a slow AVIF or HEIC encoder) hold memory
            # too: over the budget, wait for the oldest, keeping one write going beside the model.
            while len(saves) > 1 and sum(entry[6] for entry in saves) > HELD_PIXELS:
                wait(saves[0][2])
                _collect(block=False)

        def _collect(block: bool) -> None:
            keep = []
            for entry in saves:
                index, job, futs, had_colour, pages, pages_coloured, _ = entry
                if not block and not all(f.done() for f in futs):
                    keep.append(entry)
                    continue
                errors = [f.exception() for f in futs if f.exception() is not None]
                if errors and skip_existing and all(isinstance(e, OutputExistsError) for e in errors):
                    foreign = _foreign_output(job)
                    if foreign is None:  # written meanwhile by another run of the same batch: what a resume skips
                        finish(index, JobResult(job.source, "skipped", outputs=job.outputs,
                                                reason="output exists (written meanwhile by another run)"))
                        continue
                    errors = [_in_the_way(job, *foreign)]  # e.g. another photo's folder of colourings
                if errors:
                    finish(index, JobResult(job.source, "failed", reason=_reason(job.source, errors[0]), error=errors[0]))
                else:
                    finish(index, JobResult(job.source, "done", outputs=job.outputs, had_colour=had_colour[0],
                                            pages=pages, pages_coloured=pages_coloured))
            saves[:] = keep

        try:
            for job, fut in _prefetch(loader, [job for _, job in todo], ahead=max(2, batch_size),
                                      pixel_budget=HELD_PIXELS):
                try:
                    image = fut.result()
                    for output in job.outputs:
                        check_output_size(output, image.pixels.shape[1], image.pixels.shape[0])
                except Exception as e:  # recorded per file; the batch goes on
                    finish(index_of[id(job)], JobResult(job.source, "failed", reason=_reason(job.source, e), error=e))
                    continue
                batch.append((job, image))
                if len(batch) >= batch_size or sum(_area(i) for _, i in batch) >= HELD_PIXELS:
                    flush()
            flush()
        except BaseException:
            # Interrupted (Ctrl-C, kill): the colourings handed to the writer are still written (the
            # executor waits for them on its way out), so they are reported done, not lost from the
            # summary of a run that wrote them.
            saver.shutdown(wait=True)
            _collect(block=True)
            raise
        _collect(block=True)
    return [results[i] for i in range(len(jobs))]


def _reason(source: Path, error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if str(source) in text else f"{source}: {text}"
