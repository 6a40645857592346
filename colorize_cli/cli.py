"""The `colorize` command line.

`colorize IMAGE...` is the default command; `batch`, `models`, `train` and `bench` are
subcommands. Heavy modules (torch, the models) are imported inside the commands, so that
`--help`, `--version` and shell completion stay instant.
"""

from __future__ import annotations

import errno
import functools
import gc
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from . import __version__
from .errors import (ExitCode, UsageError, error_message, exit_code_for, interrupt_on_signal, is_expected,
                     is_out_of_memory)
from .paths import real_path

# Without `file=`, Rich looks up sys.stdout / sys.stderr at each write, so redirection (and tests) work.
# No emoji codes: a file named "x:smile:.png" must be printed as it is.
stdout = Console(highlight=False, soft_wrap=True, emoji=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
# Control characters in file names (escape sequences, newlines) are shown escaped on stderr.
_ESCAPED = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
DEFAULT_COMMAND = "color"


_SHORT_FLAGS = "qrh"  # short options without a value, which may come before -o in one word: -qo out/


def _output_argument(args: list[str]) -> str | None:
    """The -o/--output value as typed (Path() would drop a trailing slash): `-o V`, `-oV`,
    `--output V`, `--output=V`, and after short flags in the same word, `-qo V`, `-qoV`."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg == "--output" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--output="):
            return arg.split("=", 1)[1]
        if arg.startswith("-") and not arg.startswith("--"):
            letters = arg[1:]
            flags = len(letters) - len(letters.lstrip(_SHORT_FLAGS))
            if letters[flags:flags + 1] == "o":
                value = letters[flags + 1:]
                if value:
                    return value
                return args[i + 1] if i + 1 < len(args) else None
    return None


def _names_a_folder(text: str | None) -> bool:
    """`-o scans.2024/`: a trailing separator makes any name a folder, dots and all."""
    return text is not None and text not in ("-", "/") and text.endswith(("/", os.sep))


class DefaultCommandGroup(TyperGroup):
    """Routes `colorize photo.jpg ...` to the default command when no subcommand is named."""

    group_options = {"--help", "-h", "--version", "--debug", "--install-completion", "--show-completion"}

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        # `--debug` anywhere (an error line says "run with --debug", and users append it) is the
        # group's option, so it goes first; after `--` every word is a file name.
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]
        empty = next((i for i, a in enumerate(args[:end]) if a == "" or (a.startswith("--") and a.endswith("="))), None)
        if empty is not None:  # `-o "$OUT"` with OUT unset would write into the current folder
            before = args[empty - 1] if empty else ""
            option = args[empty].rstrip("=") or (before if before in self._value_options() else "")
            raise typer.BadParameter("it is empty (an unset shell variable?): give one, or leave it out",
                                     param_hint=option or "an argument")
        _state["output_is_folder"] = _names_a_folder(_output_argument(args[:end]))
        first = next((i for i, a in enumerate(args) if a not in ("--debug",)), None)
        if first is not None and args[first] not in self.commands and args[first] not in self.group_options:
            args = args[:first] + [DEFAULT_COMMAND] + args[first:]
        return super().parse_args(ctx, args)

    def _value_options(self) -> set[str]:
        """Every option of every command that takes a value (`-o`, `--glob`): an empty word after
        one of them is that value; after anything else it is an argument of its own."""
        options = set()
        for command in self.commands.values():
            for group in (command, *getattr(command, "commands", {}).values()):
                for param in group.params:
                    if param.opts and param.opts[0].startswith("-") and not (
                            getattr(param, "is_flag", False) or getattr(param, "count", False)):
                        options.update(param.opts)
        return options

    def invoke(self, ctx: typer.Context):
        """Ctrl-C or `kill` where no command says more (loading a model, a download): one line.

        Typer would turn the KeyboardInterrupt into a silent exit 130."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupted() from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:  # the reader of stdout went away (`| head`): its choice, not an error
            _stdout_to_devnull()
            raise typer.Exit(141) from None  # 128 + SIGPIPE, as the shell reports a closed pipe
        except Exception as e:  # what no command foresaw (an OS refusing a name, a bug): still one line
            raise fail(e) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own errors (a bad option value, an unknown option...) as one `Error:` line.

        Click and Typer would print a usage block and a boxed message: the same contract as every
        other failure instead, with `{"error": ..., "exit_code": 2}` on stdout under `--json`.
        """
        _unlabel_switches(self, self.context_class(self, info_name="colorize", **self.context_settings))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # Click's errors (Typer vendors Click: its classes are private)
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `colorize` or `colorize models`: the help
                e.show()
                sys.exit(0)
            message = " ".join(e.format_message().split()) or "bad command-line options"
            ctx = getattr(e, "ctx", None)  # (its program name may be "python -m colorize_cli")
            words = ctx.command_path[len(ctx.find_root().command_path):].split() if ctx is not None else []
            command = " ".join(["colorize", *(w for w in words if w != DEFAULT_COMMAND)])
            stderr.print(error_line(f"{message} (see `{command} --help`)"), markup=False)
            code = getattr(e, "exit_code", int(ExitCode.USAGE))
            if "--json" in argv:
                print(json.dumps({"error": message, "exit_code": code}), flush=True)
            sys.exit(code)
        except typer.Abort:  # end of input at a prompt
            sys.exit(interrupted().exit_code)
        sys.exit(result if isinstance(result, int) else 0)


def _unlabel_switches(command, ctx) -> None:
    """No type label for the switches Typer and Click add themselves (`--help`, the completion
    options), as `_flag` gives ours: Typer 0.29 shows `--help <bool>` in every command's help."""
    help_option = command.get_help_option(ctx)  # made once per command, and kept
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for name, sub in getattr(command, "commands", {}).items():
        _unlabel_switches(sub, sub.context_class(sub, parent=ctx, info_name=name))


app = typer.Typer(cls=DefaultCommandGroup, no_args_is_help=True, add_completion=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Bring colour back to black-and-white photographs.\n\n"
                       "colorize photo.jpg -o out.png   ·   colorize batch ./scans   ·   colorize models list\n\n"
                       "The options for colouring photos (-o, --model, --hint, --saturation, ...): "
                       "colorize color --help.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, info, verify and download weights.")
app.add_typer(models_app, name="models")

_state = {"debug": False}


class Sampler(str, Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    cold = "cold"
    oneshot = "oneshot"


def _version(value: bool) -> None:
    if value:
        stdout.print(f"colorize {__version__}")
        raise typer.Exit()


def _flag(*names: str, **kwargs):
    """A switch (off unless given). No type label in --help: Typer 0.29 shows `--overwrite <bool>`,
    which reads as if the switch took a value (`--overwrite true` would take "true" for a photo)."""
    return typer.Option(False, *names, metavar="", **kwargs)


@app.callback()
def main_callback(
    version: bool = _flag("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = _flag("--debug", help="Show tracebacks for errors."),
) -> None:
    _state["debug"] = debug
    _state["json"] = False


def printable(text: str) -> str:
    """`text` with control characters escaped, so a file name cannot drive the terminal, and the
    temporary files that stand for `-` shown as what they stand for."""
    for stand_in, name in _state.get("stand_ins", {}).items():
        text = text.replace(stand_in, name)
    return text.translate(_ESCAPED)


def error_line(message: str) -> str:
    return printable(f"Error: {message}")


def interrupted(message: str = "interrupted", report: dict | None = None) -> "typer.Exit":
    """Print the one `Error:` line of an interrupted run (and, under --json, `report` with the
    error), and return the Exit to raise: every Ctrl-C or `kill` ends this way."""
    stderr.print(printable(f"Error: {message}"), markup=False)
    if _state.get("json"):
        try:
            print(json.dumps({**(report or {}), "error": message, "exit_code": int(ExitCode.INTERRUPTED)}), flush=True)
        except OSError:
            _stdout_to_devnull()
    return typer.Exit(int(ExitCode.INTERRUPTED))


def _summary(results) -> dict:
    """What a run reports of its files (the --json summary); `-` and `-o -` as what they stand for."""
    names = _state.get("stand_ins", {})
    files = [r.to_json() for r in results]
    for file in files:
        file["source"] = names.get(file["source"], file["source"])
        file["outputs"] = [names.get(path, path) for path in file["outputs"]]
    return {"done": sum(r.status == "done" for r in results), "skipped": sum(r.status == "skipped" for r in results),
            "failed": sum(r.status == "failed" for r in results), "files": files}


def fail(error: BaseException) -> "typer.Exit":
    """Print one `Error:` line (a traceback too with --debug) and return the Exit to raise."""
    if _state["debug"]:
        traceback.print_exception(error, file=sys.stderr)
    message = error_message(error)
    if not is_expected(error) and not _state["debug"]:
        message += " (run with --debug for details)"
    stderr.print(error_line(message), markup=False)
    code = int(exit_code_for(error))
    if _state.get("json"):  # scripts reading --json get the failure on stdout too
        _state["json"] = False  # once: this may be the failure to write that very report
        try:
            print(json.dumps({"error": message, "exit_code": code}), flush=True)
        except OSError:  # stdout itself is what failed (a full disk, a reader gone): said on stderr
            _stdout_to_devnull()
    return typer.Exit(code)


@contextmanager
def _collector_paused():
    """Start-up without Python's cyclic garbage collector.

    Importing torch and building a model make about a million long-lived objects, and the
    collector rescans all of them again and again while they appear: ~0.25 s of a 2-second
    `colorize photo.jpg` on two cores (benchmarks/cli_latency.py). Start-up makes no garbage
    cycles worth that, so the collector waits; what start-up made is then frozen (it lives as
    long as the process) and later collections skip it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _check_model_options(model: Optional[str], weights: Optional[Path], device: str) -> None:
    """With nothing to colour the model is never loaded, but the options naming it are still
    checked, so a typo is not reported as success: the registry name, the --weights file, and a
    device asked for by name (which needs torch: a second, paid only when one is named)."""
    from .weights import load_registry, resolve_weights

    try:
        if weights is not None:
            resolve_weights(None, weights_path=weights)  # exists, and is safetensors
        if model is not None:
            load_registry().get(model)
        if str(device) not in ("auto", "cpu"):
            from .pipeline import select_device

            select_device(device)
    except Exception as e:
        raise fail(e) from None


def _load_engine(model: Optional[str], weights: Optional[Path], device: str):
    with _collector_paused():
        from .pipeline import Engine

        return Engine.load(model=model, weights=weights, device=device)


class _Reporter:
    """Progress bar on stderr, output paths on stdout, one `Error:` line per failed file."""

    def __init__(self, total: int, quiet: bool, as_json: bool, list_outputs: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.quiet, self.as_json, self.list_outputs = quiet, as_json, list_outputs
        # Only on a terminal: redirected, a transient bar leaves blank lines among the messages.
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=stderr, transient=True, disable=quiet or not stderr.is_terminal)
        self.task = self.progress.add_task("colouring", total=total)
        self.steps = self.progress.add_task("sampling", total=1, visible=False)
        self.results: list = []  # so far: what an interrupted run still reports

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def step(self, done: int, total: int) -> None:
        """Sampler steps of the batch in flight (diffusion models take many)."""
        self.progress.update(self.steps, completed=done, total=total, visible=total > 1)

    def __call__(self, result) -> None:
        self.results.append(result)
        self.progress.advance(self.task)
        if result.status == "failed":
            self.progress.console.print(error_line(str(result.reason)), markup=False)
        elif result.status == "done" and not self.as_json and self.list_outputs:
            for path in result.outputs:  # as they are (not through Rich): scripts read these lines
                _print_line(str(path))


def _print_line(text: str) -> None:
    """A line on stdout; when the reader has gone (`| head -1`), the colouring goes on quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()


def print_json(data) -> None:
    """A --json report on stdout (Rich indents it, and colours it on a terminal).

    A file name that is not valid UTF-8 reaches Python with its stray bytes as lone surrogates;
    written raw they would make stdout invalid UTF-8, so such a report is written with \\uXXXX
    escapes instead (`os.fsencode` turns a name read back into its bytes)."""
    text = json.dumps(data, ensure_ascii=False)
    ascii_only = any("\ud800" <= c <= "\udfff" for c in text)
    if stdout.is_terminal:
        stdout.print_json(text, ensure_ascii=ascii_only)
        return
    # For a script, as Rich would print it, but through print(): Rich ends the process (exit 1) when
    # the reader has gone, and a full disk behind the redirection must be an output error.
    from .imageio import OutputError

    try:
        print(json.dumps(data, indent=2, ensure_ascii=ascii_only), flush=True)
    except BrokenPipeError:  # the reader's choice: the run's own exit code stands
        _stdout_to_devnull()
    except OSError as e:
        _stdout_to_devnull()
        raise fail(OutputError(f"cannot write the --json report to standard output: {e.strerror or e}")) from None


def _stdout_to_devnull() -> None:
    """Later writes (and Python's flush at exit) go nowhere instead of failing again."""
    devnull = open(os.devnull, "w")
    try:
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        sys.stdout = devnull


def _summarise(results, as_json: bool, quiet: bool, single: bool, tiff_how: str = "-o NAME.tif") -> None:
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        print_json(_summary(results))
    elif not quiet and not single:
        stderr.print(f"{done} done, {skipped} skipped, {len(failed)} failed", markup=False)
        for r in failed:
            stderr.print(printable(f"  failed: {r.reason}"), markup=False)
    coloured = [r.source for r in results if r.had_colour]
    if coloured and not quiet and not as_json:
        names = ", ".join(str(p) for p in coloured[:5]) + (f", ... ({len(coloured) - 5} more)" if len(coloured) > 5 else "")
        what = "it was" if len(coloured) == 1 else "they were"
        stderr.print(printable(f"Note: already in colour (a toned or colour print), so {what} recoloured from "
                               f"the lightness alone: {names}"), markup=False)
    paged = [r for r in results if r.pages_coloured < r.pages]
    if paged and not quiet and not as_json:  # a multi-page scan must not look fully done when it is not
        if len(paged) == 1:
            what = f"{paged[0].source} has {paged[0].pages} pages; only the first was coloured"
        else:
            names = ", ".join(f"{r.source} ({r.pages} pages)" for r in paged[:5])
            names += f", ... ({len(paged) - 5} more)" if len(paged) > 5 else ""
            what = f"only the first page was coloured of these multi-page files: {names}"
        stderr.print(printable(f"Note: {what}, as {paged[0].outputs[0].suffix or 'that format'} holds one "
                               f"page; a TIFF output ({tiff_how}) gets every page coloured"), markup=False)
    if failed:
        if single:
            raise typer.Exit(int(exit_code_for(failed[0].error)) if failed[0].error else int(ExitCode.PARTIAL))
        raise typer.Exit(int(ExitCode.PARTIAL))


# Options shared by the colouring commands.
ModelOpt = typer.Option(None, "--model", "-m", help="Registry model name (see `colorize models list`).")
WeightsOpt = typer.Option(None, "--weights", help="A local .safetensors file instead of a registry model.",
                          exists=False, readable=False)  # (what is wrong with it, our checks say: exit 4)
SamplerOpt = typer.Option(None, "--sampler", help="Sampler (only those the model supports).")
StepsOpt = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's).")
SeedOpt = typer.Option(0, "--seed", min=0, help="Random seed: the same seed gives the same image.")
SamplesOpt = typer.Option(1, "--samples", min=1, max=64,
                          help="Different colourings per input (diffusion samplers: ddpm, ddim).")
SizeOpt = typer.Option(None, "--size", min=16, max=4096,
                       help="Working resolution the model sees (longer side, px; at most the photo's own size or the "
                            "model's default, whichever is larger).")
SaturationOpt = typer.Option(None, "--saturation", min=0.0, max=8.0,
                             help="Colour strength: 1 as the model predicts, above 1 more vivid (strong colours gain "
                                  "most; faint, unsure tints stay faint), below 1 more muted, 0 grey (default: the "
                                  "model's setting). For vivid colour throughout, try --model lab-ddpm.")
def _device_name(value: str) -> str:
    """The form of --device, checked before any work (whether that device is present: at load)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return value


DeviceOpt = typer.Option("auto", "--device", callback=_device_name,
                         help="Where the model runs: auto, cpu, cuda, cuda:N (one GPU of several) or mps.")
BatchOpt = typer.Option(4, "--batch-size", min=1, help="Images per model call.")
QuietOpt = _flag("--quiet", "-q", help="No progress or summary on stderr.")
def _json_mode(value: bool) -> bool:
    _state["json"] = value
    return value


JsonOpt = _flag("--json", callback=_json_mode, help="Print a JSON summary on stdout (an error too).")
OverwriteOpt = _flag("--overwrite", help="Replace existing outputs (inputs are never overwritten).")
StripMetadataOpt = _flag("--strip-metadata",
                                help="Do not copy the photo's EXIF, XMP and text (dates, captions, GPS, ...) into "
                                     "outputs; its resolution and a note naming colorize and the settings are kept.")


def _make_folder(path: Path) -> None:
    """Create an output folder, or stop with exit code OUTPUT saying why it cannot be."""
    from .imageio import OutputError, make_folder

    try:
        make_folder(path)
    except OutputError as e:
        raise fail(e) from None


def _refuse_unwritable_folders(jobs) -> None:
    """Stop before colouring when no output of `jobs` could be written (a read-only disk, a folder
    without write permission): else every photo is coloured first and then fails. Where some could
    be written, the others fail one by one, as usual."""
    refusals: dict[Path, str | None] = {}
    for job in jobs:
        folder = job.outputs[0].parent
        while not folder.exists() and folder.parent != folder:  # the nearest folder there is
            folder = folder.parent
        if not folder.is_dir():  # a file in the way: the writer says so, in its own words
            return
        if folder not in refusals:
            refusals[folder] = _write_refusal(folder)
        if refusals[folder] is None:
            return
    if refusals:
        from .imageio import OutputError

        folder, why = next(iter(refusals.items()))
        raise fail(OutputError(f"cannot write into {folder}: {why}; choose another folder with -o"))


def _write_refusal(folder: Path) -> str | None:
    """Why no file can be made in `folder`, found by making one (permission bits, read-only mounts,
    ACLs and network disks all answer alike; it is gone when closed), or None if one can."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:  # only a refusal counts; anything else is left to the writer's own message
        return {errno.EROFS: "a read-only disk", errno.EACCES: "no permission",
                errno.EPERM: "not permitted"}.get(e.errno)


def _run(jobs, *, model, weights, sampler, steps, seed, samples, size, saturation, device, batch_size, quiet,
         as_json, overwrite, skip_existing, single, strip_metadata, hints=(), contact_sheet=None,
         root=None, list_outputs=True, given_settings: dict[str, str] | None = None) -> None:
    from .batch import run_jobs, triage

    engine = None
    # Load the model only when something needs colouring, or to check colouring settings typed on
    # the command line: a plain rerun that finds every output made (refused, or skipped when a
    # batch resumes) says so at once, not after a second of start-up.
    triaged = triage(jobs, overwrite=overwrite, skip_existing=skip_existing)
    to_colour = triaged[1]
    _refuse_unwritable_folders([job for _, job in to_colour])
    settings_given = any(v is not None for v in (sampler, steps, size, saturation)) or samples > 1
    if not (to_colour or settings_given):
        _check_model_options(model, weights, device)
    else:
        try:
            engine = _load_engine(model, weights, device)
            from .diffusion import RANDOM_SAMPLERS

            chosen = engine.resolve_settings(sampler.value if sampler else None, steps, size, saturation)[0]
            if samples > 1 and chosen not in RANDOM_SAMPLERS:  # K identical files would look like K choices
                raise UsageError(f"--samples {samples}: the {chosen} sampler of model {engine.name!r} gives one "
                                 "colouring per photo; several need a diffusion sampler (ddpm, ddim), e.g. "
                                 "--model lab-ddpm")
        except Exception as e:
            raise fail(e) from None
    report = None
    try:
        with _Reporter(len(jobs), quiet, as_json, list_outputs) as report:
            results = run_jobs(engine, jobs, sampler=sampler.value if sampler else None, steps=steps, size=size,
                               seed=seed, samples=samples, saturation=saturation, batch_size=batch_size,
                               overwrite=overwrite, skip_existing=skip_existing, keep_metadata=not strip_metadata,
                               hints=hints, on_result=report, on_step=report.step, triaged=triaged)
    except KeyboardInterrupt:
        finished = _summary(report.results if report is not None else [])
        stop = interrupted("interrupted; finished outputs are kept, rerun to resume.", finished)  # (--json: the files)
        if not (quiet or as_json or single):
            stderr.print(f"{finished['done']} done before the interrupt", markup=False)
        raise stop from None
    if contact_sheet is not None:
        _write_contact_sheet(results, contact_sheet, root, quiet or as_json)
    if skip_existing and given_settings and not (quiet or as_json):
        _mention_outputs_made_otherwise(results, given_settings)
    _summarise(results, as_json, quiet, single, tiff_how="--format tif" if skip_existing else "-o NAME.tif")


def _mention_outputs_made_otherwise(results, given: dict[str, str]) -> None:
    """A rerun with other settings keeps the outputs an earlier run made (that is how a batch
    resumes): say so when their notes record settings other than the ones given now."""
    from .metadata import note_settings, software_note

    other = []
    for r in results:
        if r.status == "skipped" and r.outputs:
            made = note_settings(software_note(r.outputs[0]))
            differ = [f"{key} {made[key]}" for key, value in given.items() if key in made and made[key] != value]
            if differ:
                other.append((r.outputs[0], differ))
    if other:
        path, differ = other[0]
        stderr.print(printable(f"Note: {len(other)} output(s) were kept as an earlier run made them, with other "
                               f"settings (e.g. {path}: {', '.join(differ)}); pass --overwrite to colour them again "
                               "with these, or -o to write elsewhere"), markup=False)


def _write_contact_sheet(results, target: Path, root: Path | None, quiet: bool) -> None:
    """Sheets of every coloured (or already coloured) photo beside its input, and of every photo that
    failed beside why; a problem is a warning."""
    from .contact_sheet import Failed, write_contact_sheets
    from .imageio import OutputError

    pairs = [(r.source, r.outputs[0]) if r.status != "failed" else (r.source, Failed(r.reason or "failed"))
             for r in results if r.status == "failed" or r.outputs]
    if all(isinstance(coloured, Failed) for _, coloured in pairs):
        return  # nothing coloured: the errors said it all
    try:
        pages, problems = write_contact_sheets(pairs, target, root=root)
    except (OutputError, OSError) as e:  # the colourings are written; the summary and exit code are about them
        pages, problems = [], [error_message(e)]
    for problem in problems:
        stderr.print(printable(f"Warning: contact sheet: {problem}"), markup=False)
    if pages and not quiet:
        stderr.print(printable(f"contact sheet: {', '.join(str(p) for p in pages)}"), markup=False)


@app.command(DEFAULT_COMMAND, help="Colour photos (the default command: `colorize IMAGE... [-o OUT]`).")
def color_command(
    images: List[Path] = typer.Argument(..., help="Input images.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (one input) or folder (several inputs, "
                                          "or a name without an extension); `-` writes a PNG to standard output "
                                          "(as the input `-` reads one)."),
    model: Optional[str] = ModelOpt, weights: Optional[Path] = WeightsOpt, sampler: Optional[Sampler] = SamplerOpt,
    steps: Optional[int] = StepsOpt, seed: int = SeedOpt, samples: int = SamplesOpt, size: Optional[int] = SizeOpt,
    saturation: Optional[float] = SaturationOpt,
    hint_texts: Optional[List[str]] = typer.Option(
        None, "--hint", metavar="X,Y:COLOUR", help="A colour you know: X,Y:COLOUR[:REACH%], e.g. 120,80:#b22222 or 40%,25%:navy "
                             "(pixels or percent of the photo; repeatable; one input only). It spreads over the "
                             "surface it is on and stops at edges."),
    hint_images: Optional[List[Path]] = typer.Option(
        None, "--hint-image", metavar="FILE", exists=False, dir_okay=True, readable=False,  # (our checks say what is wrong)
        help="Colours you know, painted: an image of the photo's shape with strokes on a transparent layer "
             "(or in colour on a copy of the photo); each colour spreads like a --hint. Repeatable; one input only."),
    device: str = DeviceOpt, batch_size: int = BatchOpt,
    overwrite: bool = OverwriteOpt, strip_metadata: bool = StripMetadataOpt, quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    # `-` as the input reads the photo from standard input; `-o -` writes a PNG to standard output.
    to_stdout = output is not None and str(output) == "-"
    piped = to_stdout or any(str(image) == "-" for image in images)
    stand_ins = Path(tempfile.mkdtemp(prefix="colorize-")) if piped else None
    try:
        if stand_ins is not None:
            images, output = _standard_streams(images, output, samples, as_json, stand_ins)
        _colour_files(images, output, model=model, weights=weights, sampler=sampler, steps=steps, seed=seed,
                      samples=samples, size=size, saturation=saturation, hint_texts=hint_texts, hint_images=hint_images,
                      device=device,
                      batch_size=batch_size, overwrite=overwrite, strip_metadata=strip_metadata, quiet=quiet,
                      as_json=as_json, list_outputs=not to_stdout)
        if to_stdout:
            _write_to_stdout(output.read_bytes())
    finally:
        if stand_ins is not None:
            shutil.rmtree(stand_ins, ignore_errors=True)
            _state.pop("stand_ins", None)


def _write_to_stdout(data: bytes) -> None:
    """The PNG of `-o -`. A reader that went away is its own choice (see DefaultCommandGroup);
    a full disk or a broken device behind the redirection is an output error."""
    from .imageio import OutputError

    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        _stdout_to_devnull()  # Python's own flush at exit would fail again, with a traceback
        raise fail(OutputError(f"cannot write the PNG to standard output: {e.strerror or e}")) from None


def _refuse_output_that_is_standard_input(output: Path) -> None:
    """`colorize - -o photo.png --overwrite < photo.png` would replace the input: never."""
    from .imageio import SameFileError

    try:
        source = os.fstat(sys.stdin.fileno())
        same = str(output) != "-" and os.path.samestat(source, os.stat(output))
    except (OSError, ValueError, AttributeError):  # stdin is no file (a pipe, a test), or no output yet
        return
    if same:
        raise fail(SameFileError(f"{output} is the photo on standard input; inputs are never overwritten"))


def _standard_streams(images: list[Path], output: Optional[Path], samples: int, as_json: bool,
                      stand_ins: Path) -> tuple[list[Path], Optional[Path]]:
    """Temporary files that stand in for `-` (standard input) and `-o -` (standard output)."""
    from .imageio import OutputError

    if any(str(image) == "-" for image in images):
        if len(images) != 1:
            raise fail(UsageError("`-` (a photo on standard input) must be the only input"))
        if output is None:
            raise fail(UsageError("a photo from standard input needs -o FILE (or -o - for standard output)"))
        if sys.stdin is None or sys.stdin.isatty():
            raise fail(UsageError("no photo on standard input; pipe one in: colorize - -o out.png < photo.jpg"))
        _refuse_output_that_is_standard_input(output)
        data = sys.stdin.buffer.read()
        if not data:
            raise fail(FileNotFoundError("standard input is empty: no photo came"))
        images = [stand_ins / "stdin"]
        images[0].write_bytes(data)
        _state.setdefault("stand_ins", {})[str(images[0])] = "<standard input>"
    if output is not None and str(output) == "-":
        if samples != 1:
            raise fail(UsageError("-o - writes one image to standard output: leave out --samples"))
        if as_json:
            raise fail(UsageError("-o - writes the image to standard output, which --json cannot share"))
        if len(images) > 1:
            raise fail(UsageError("-o - writes one image to standard output: give one input, or -o a folder"))
        if sys.stdout is None:  # closed by the caller (`>&-`)
            raise fail(OutputError("-o - writes to standard output, and it is closed"))
        if sys.stdout.isatty():
            raise fail(UsageError("-o - would write image bytes to the terminal; redirect it: -o - > out.png"))
        output = stand_ins / "stdout.png"
        _state.setdefault("stand_ins", {})[str(output)] = "<standard output>"
    return images, output


def _colour_files(images: list[Path], output: Optional[Path], *, model, weights, sampler, steps, seed, samples,
                  size, saturation, hint_texts, device, batch_size, overwrite, strip_metadata, quiet,
                  as_json, list_outputs=True, hint_images: Optional[List[Path]] = None) -> None:
    from .batch import Job, distinct_targets, sample_paths
    from .imageio import ImageError, UnsupportedFormatError, output_format, upright_size

    hints = []
    if hint_texts or hint_images:
        from .hint_image import read_hint_image
        from .hints import parse_hint

        if len(images) != 1:
            options = " and ".join(name for name, given in (("--hint", hint_texts), ("--hint-image", hint_images)) if given)
            raise fail(UsageError(f"{options} place{'s' if ' and ' not in options else ''} colours on one photo: "
                                  "give exactly one input"))
        try:
            hints = [parse_hint(text) for text in hint_texts or ()]
            for hint_image in hint_images or ():
                try:
                    hints += read_hint_image(hint_image)
                except ImageError as e:  # unreadable, not an image: an input error (exit 3), as for a photo
                    raise fail(e) from None
            photo_size = upright_size(images[0])
            for hint in hints if photo_size else ():  # before a second of model loading
                hint.check_fits(*photo_size)
        except (UsageError, ValueError) as e:
            raise fail(UsageError(f"{images[0]}: {e}") if not isinstance(e, UsageError) else e) from None
    for image in images:
        if image.is_dir():
            raise fail(UsageError(f"{image} is a folder; use `colorize batch {image}`"))
    missing = [image for image in images if not image.exists()]
    if len(missing) == len(images):  # nothing to do: say so before loading a model
        raise fail(FileNotFoundError(f"{missing[0]} does not exist"))
    # -o names a folder when it is one, when it ends with a slash, when there are several inputs, or
    # when it has no extension.
    named_folder = _state.get("output_is_folder", False)
    to_folder = output is not None and (len(images) > 1 or output.is_dir() or not output.suffix or named_folder)
    if to_folder and output.suffix and not output.is_dir() and not named_folder:
        raise fail(UsageError(f"several inputs need -o to name a folder (-o {output}/ makes one of that name)"))
    if output is not None and not to_folder:
        try:
            output_format(output)
        except UnsupportedFormatError as e:  # perhaps a folder with a dot in its name was meant
            raise fail(UnsupportedFormatError(f"{str(e).rstrip('.')}; or end it with / for a folder: -o {output}/")) from None
        except Exception as e:
            raise fail(e) from None
    if output is not None and not to_folder:
        targets = [output]
    else:  # photo.jpg -> photo-colorized.png; photo.jpg and photo.tif -> photo.jpg-colorized.png, ...
        folders = [output if to_folder else image.parent for image in images]
        targets = distinct_targets([f / f"{image.stem}-colorized.png" for f, image in zip(folders, images)],
                                   [f / f"{image.name}-colorized.png" for f, image in zip(folders, images)],
                                   [str(image.absolute()) for image in images])
    # -o FILE: the user's choice to replace with --overwrite (with --samples, FILE-1, FILE-2... are colorize's names)
    named = output is not None and not to_folder and samples == 1
    jobs = [Job(image, sample_paths(target, samples), named=named) for image, target in zip(images, targets)]
    if to_folder:
        _make_folder(output)
    _run(jobs, model=model, weights=weights, sampler=sampler, steps=steps, seed=seed, samples=samples, size=size,
         saturation=saturation, device=device, batch_size=batch_size, quiet=quiet, as_json=as_json,
         overwrite=overwrite, skip_existing=False, single=len(images) == 1, strip_metadata=strip_metadata,
         hints=hints, list_outputs=list_outputs)


def _contact_sheet_format_problem(sheet: Path) -> str | None:
    """Why a contact sheet cannot be written under this name (a whole message); None when it can.
    A rerun must know the pages it may replace, so only formats that carry colorize's note will do."""
    from .imageio import output_format, unwritable_reason
    from .metadata import NOTE_FORMATS

    if sheet.is_dir():
        return f"--contact-sheet {sheet} is a folder; name a file, e.g. {sheet / 'review.jpg'}"
    try:
        fmt = output_format(sheet)
    except ValueError:  # no image format at all: the choice is among those below, not every format
        fmt = None
    if fmt not in NOTE_FORMATS:
        what = f"a {fmt} file cannot carry" if fmt else f"{sheet.suffix or 'a name without an extension'} is no format that carries"
        return (f"--contact-sheet {sheet}: {what} the note by which colorize knows its own pages; "
                "name a .jpg, .png, .tif, .webp, .avif or .heic")
    problem = unwritable_reason(sheet.suffix)
    return None if problem is None else f"--contact-sheet {sheet}: {problem}"


def _check_contact_sheet(sheet: Path, folder: Path, out_dir: Path, jobs, overwrite: bool) -> None:
    """Before any colouring, refuse a sheet that would replace a photo, an output or another
    file, or that the next run would colour; create its folder."""
    from .contact_sheet import is_contact_sheet, pages_it_may_write
    from .imageio import OutputExistsError

    resolved, folder, out_dir = real_path(sheet), real_path(folder), real_path(out_dir)
    # Files in the input folder are coloured by the next run, unless they are in an output folder inside it.
    nested_output = out_dir.is_relative_to(folder) and resolved.is_relative_to(out_dir)
    if resolved.is_relative_to(folder) and not nested_output:
        raise fail(UsageError(f"--contact-sheet {sheet} is inside the input folder, where the next run would "
                              "colour it; put it elsewhere (e.g. in the output folder)"))
    pages = pages_it_may_write(resolved, len(jobs))  # other files of a page's name are never touched
    for job in jobs:
        for path in (job.source, *job.outputs):
            if real_path(path) in pages:
                raise fail(UsageError(f"--contact-sheet {sheet} would replace {path}; pick another name"))
    if not overwrite:
        for existing in sorted(pages):
            if existing.exists() and not is_contact_sheet(existing):
                raise fail(OutputExistsError(f"--contact-sheet would replace {existing}, which is not a contact "
                                             "sheet colorize made; pass --overwrite to replace it"))
    _make_folder(sheet.parent)


def _leave_out_earlier_outputs(sources: list[Path], folder: Path, out_dir: Path, suffix: str,
                               samples: int, made_by_colorize) -> list[Path]:
    """Sources without the files under an output folder inside the input folder (`batch . -o out`).

    Those are earlier colourings (what this batch would write, or what carries colorize's note),
    never to be coloured again. A photo of the user's there would be passed over in silence:
    refuse instead.
    """
    from .batch import plan_batch

    inside = [s for s in sources if real_path(s).is_relative_to(real_path(out_dir))]
    if not inside:
        return sources
    rest = [s for s in sources if s not in set(inside)]
    planned = {real_path(p) for job in plan_batch(folder, out_dir, rest, suffix, samples) for p in job.outputs}
    photos = [s for s in inside if real_path(s) not in planned and not made_by_colorize(s)]
    if photos:
        raise fail(UsageError(
            f"the output folder {out_dir} is inside {folder} and holds {len(photos)} photo(s) of its own "
            f"(e.g. {photos[0]}), which would not be coloured; choose an output folder outside the photos"))
    return rest


def _given_settings(ctx: Optional[typer.Context], **values) -> dict[str, str]:
    """The colouring settings typed on the command line, written as a colouring's note writes them."""
    given = {}
    for key, value in values.items():
        # By name, as in train_cli: Typer may bring its own copy of click and its enum.
        typed = ctx is not None and getattr(ctx.get_parameter_source(key), "name", "") == "COMMANDLINE"
        if value is not None and (typed or key != "seed"):
            given[key] = f"{value:g}" if key == "saturation" else str(value)
    return given


def _mention_subfolder_photos(folder: Path, out_dir: Path, glob: Optional[str], made_by_colorize) -> None:
    """Without --recursive, say how many photos (matching --glob) the subfolders hold, so none is
    left out unknowingly; images colorize made (an earlier run's outputs inside the folder), which
    --recursive would leave out too, are not counted."""
    import fnmatch

    from .batch import case_insensitive_glob
    from .imageio import IMAGE_EXTENSIONS, opens_as_image

    def wanted(here: str, name: str) -> bool:
        if name.startswith("."):
            return False
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            # the glob's last part, for the names one folder down as in the folder itself
            return not glob or fnmatch.fnmatchcase(name, case_insensitive_glob(glob.rsplit("/", 1)[-1]))
        # as --recursive would take them: a --glob match only if it is an image (not a sidecar)
        return bool(glob) and fnmatch.fnmatchcase(name, case_insensitive_glob(glob.rsplit("/", 1)[-1])) \
            and opens_as_image(Path(here) / name)

    count, example = 0, None
    skip = real_path(out_dir)
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and real_path(Path(here) / d) != skip)
        if Path(here) == folder:
            continue
        found = sorted(f for f in files if wanted(here, f) and not made_by_colorize(Path(here) / f))
        count += len(found)
        example = example or (Path(here) / found[0] if found else None)
    if count:
        stderr.print(printable(f"Note: {count} image(s) in subfolders are not included (e.g. {example}); "
                               "add --recursive to colour them too"), markup=False)


def _leave_out_colorize_made(sources: list[Path], quiet: bool, made_by_colorize) -> list[Path]:
    """Sources without the images colorize made (colourings and contact sheets of an earlier run,
    known by their note): colouring them again would only recolour a colouring."""
    made = [s for s in sources if made_by_colorize(s)]
    if not made:
        return sources
    if not quiet:
        stderr.print(printable(f"Note: left out {len(made)} image(s) colorize made earlier (colourings or contact "
                               f"sheets), e.g. {made[0]}"), markup=False)
    left_out = set(made)
    return [s for s in sources if s not in left_out]


@app.command("batch", help="Colour every image under a folder, mirroring its structure; rerun to resume.")
def batch_command(
    ctx: typer.Context,  # (Typer fills it in; no default: Python 3.10 would read `= None` as Optional[Context])
    folder: Path = typer.Argument(..., help="Folder of images.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: FOLDER-colorized)."),
    recursive: bool = _flag("--recursive", "-r", help="Include subfolders."),
    glob: Optional[str] = typer.Option(None, "--glob", help="Only files matching this pattern, e.g. '*.tif' (any case: it also matches .TIF)."),
    ext: str = typer.Option("png", "--format", help="Output format: png, tif, jpg, webp, bmp, avif or heic (with pillow-heif)."),
    contact_sheet: Optional[Path] = typer.Option(
        None, "--contact-sheet", help="Also write every photo beside its colouring on review pages, e.g. "
                                      "review.jpg (48 per page: one page is review.jpg, more are review-1.jpg, ...)."),
    model: Optional[str] = ModelOpt, weights: Optional[Path] = WeightsOpt, sampler: Optional[Sampler] = SamplerOpt,
    steps: Optional[int] = StepsOpt, seed: int = SeedOpt, samples: int = SamplesOpt, size: Optional[int] = SizeOpt,
    saturation: Optional[float] = SaturationOpt, device: str = DeviceOpt, batch_size: int = BatchOpt,
    overwrite: bool = OverwriteOpt, strip_metadata: bool = StripMetadataOpt, quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    from .batch import discover, plan_batch
    from .imageio import unwritable_reason
    from .metadata import made_by_colorize

    if not folder.is_dir():
        raise fail(FileNotFoundError(f"{folder} is not a folder"))
    if output is not None and str(output) == "-":
        raise fail(UsageError("batch writes a folder of colourings; -o - (standard output) is for one photo: "
                              "colorize photo.jpg -o -"))
    suffix = "." + ext.lower().lstrip(".")
    problem = unwritable_reason(suffix)
    if problem is not None:
        raise fail(UsageError(f"unsupported --format {ext!r}: {problem.replace('extension', 'format')}"))
    # FOLDER-colorized beside it, as the user named it (relative stays relative); `batch .` and
    # `batch ..` need the folder's real name.
    plain = folder.name not in ("", ".", "..")
    out_dir = output or (folder.with_name(folder.name + "-colorized") if plain
                         else real_path(folder).with_name(real_path(folder).name + "-colorized"))
    if contact_sheet is not None:
        problem = _contact_sheet_format_problem(contact_sheet)
        if problem is not None:
            raise fail(UsageError(problem))
    try:
        not_images: list[Path] = []
        overlooked: list[Path] | None = None if glob or quiet or as_json else []
        sources = discover(folder, recursive=recursive, pattern=glob, not_images=not_images, overlooked=overlooked)
        everything = discover(folder, recursive=recursive, pattern=None) if glob else []
    except UsageError as e:
        raise fail(e) from None
    if not_images and not (quiet or as_json):
        stderr.print(printable(f"Note: left out {len(not_images)} file(s) matching --glob {glob!r} that are not "
                               f"images (e.g. {not_images[0]})"), markup=False)
    if overlooked:  # a scanner or an old archive that wrote no extension: say how to take them
        stderr.print(printable(f"Note: left out {len(overlooked)} file(s) without an extension that open as images "
                               f"(e.g. {min(overlooked)}): --glob '*' colours them too"), markup=False)
    made = functools.lru_cache(maxsize=None)(made_by_colorize)  # each file's note read once
    if real_path(out_dir).is_relative_to(real_path(folder)):
        sources = _leave_out_earlier_outputs(sources, folder, out_dir, suffix, samples, made)
    sources = _leave_out_colorize_made(sources, quiet or as_json, made)
    # The photos a whole run would colour: named as if coloured, so a --glob never changes a name.
    outputs_root = real_path(out_dir)
    siblings = [p for p in everything if not real_path(p).is_relative_to(outputs_root) and not made(p)]
    if not recursive and not (quiet or as_json):
        _mention_subfolder_photos(folder, out_dir, glob, made)
    if not sources:
        hint = f" matching --glob {glob!r}" if glob else ""
        raise fail(FileNotFoundError(f"no images{hint} found in {folder}" + ("" if recursive else " (try --recursive)")))
    jobs = plan_batch(folder, out_dir, sources, suffix, samples, siblings)
    if contact_sheet is not None:
        _check_contact_sheet(contact_sheet, folder, out_dir, jobs, overwrite)
    _make_folder(out_dir)  # subfolders per file, as they are written: one in the way fails only its photos
    _run(jobs, model=model, weights=weights, sampler=sampler, steps=steps, seed=seed, samples=samples, size=size,
         saturation=saturation, device=device, batch_size=batch_size, quiet=quiet, as_json=as_json,
         overwrite=overwrite, skip_existing=True, single=False, strip_metadata=strip_metadata,
         contact_sheet=contact_sheet, root=folder, given_settings=_given_settings(
             ctx, model=model, sampler=sampler.value if sampler else None, steps=steps, size=size,
             saturation=saturation, seed=seed))


# ---------------------------------------------------------------------------------------------
# models


@models_app.command("list", help="List the registry's models and where their weights resolve from.")
def models_list(as_json: bool = JsonOpt) -> None:
    from rich.table import Table

    from .weights import load_registry, locate_weights

    try:
        registry = load_registry()
        rows = []
        for name in registry.names:
            entry = registry.get(name)
            status = locate_weights(entry)  # (no checks: one broken cache entry spoils only its own row)
            source = "not available" if status is None else (
                status.source if status.path.is_file() else f"{status.source}: broken (see `models verify {name}`)")
            rows.append({"name": name, "default": name == registry.default, "architecture": entry.architecture,
                         "params": entry.params, "licence": entry.licence, "sampler": entry.default_sampler,
                         "steps": entry.default_steps, "size": entry.size,
                         "source": source, "description": entry.description})
    except Exception as e:
        raise fail(e) from None
    if as_json:
        print_json(rows)
        return
    cells = [(r["name"] + (" (default)" if r["default"] else ""), r["architecture"],
              f"{r['params'] / 1e6:.1f}M" if r["params"] else "–", r["licence"], r["sampler"], str(r["steps"]),
              str(r["size"]), r["source"], r["description"]) for r in rows]
    header = ("model", "architecture", "params", "licence", "sampler", "steps", "size", "weights", "description")
    if not stdout.is_terminal:  # piped (`| grep`): whole names and fields, one line per model, tab-separated
        _print_line("\t".join(("model", "default", *header[1:])))
        for r, row in zip(rows, cells):
            _print_line("\t".join((r["name"], "yes" if r["default"] else "no", *row[1:])))
        return
    table = Table(*header[:-1])
    # The name is what `--model` needs: never cut to "latent-c…" on a narrow (80-column) terminal.
    table.columns[0].min_width = max(len(r["name"]) for r in rows) if rows else None
    for row in cells:
        table.add_row(*row[:-1])
    stdout.print(table)
    for r in rows:
        stdout.print(f"{r['name']}: {r['description']}", markup=False, highlight=False)


@models_app.command("info", help="Everything the registry and the weights file say about one model.")
def models_info(name: str = typer.Argument(..., show_default=False), as_json: bool = JsonOpt) -> None:
    from dataclasses import asdict

    from .weights import load_registry, read_config, verify

    try:
        entry = load_registry().get(name)
        status = verify(entry)
        info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(entry).items()}
        info.update(source=status.source, path=str(status.path) if status.path else None,
                    sha256_status=status.hash_status, problem=status.problem)
        if status.path is not None:
            try:
                info["config"] = read_config(status.path)
            except Exception:
                if status.problem is None:
                    raise  # (a damaged file's problem is already in the info: shown, not an error)
    except Exception as e:
        raise fail(e) from None
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if key != "config":
            stdout.print(f"{key:>16}: {value}", markup=False)
    if "config" in info:
        stdout.print(f"{'config':>16}: {json.dumps(info['config'])}", markup=False)


@models_app.command("verify", help="Check the sha256 and format of every model's local weights.")
def models_verify(name: Optional[str] = typer.Argument(None, help="One model (default: all)."), as_json: bool = JsonOpt) -> None:
    from .weights import load_registry, verify

    try:
        registry = load_registry()
        names = [name] if name else registry.names
        results = [verify(registry.get(n)) for n in names]
    except Exception as e:
        raise fail(e) from None
    if as_json:
        print_json([{"name": r.name, "ok": r.ok, "source": r.source, "sha256": r.hash_status,
                     "problem": r.problem} for r in results])
    else:
        for r in results:
            mark = "ok" if r.ok else ("missing" if not r.resolved else "FAILED")
            detail = f"{r.source}, sha256 {r.hash_status}" if r.resolved else ""
            stdout.print(f"{r.name}: {mark} {detail}".rstrip(), markup=False)
            if r.problem and (r.resolved or name):
                stderr.print(printable(f"  {r.problem}"), markup=False)
    bad = [r for r in results if r.resolved and not r.ok] or ([r for r in results if not r.ok] if name else [])
    if bad:
        if not as_json:
            problem = bad[0].problem if len(bad) == 1 and bad[0].problem else "see above"
            stderr.print(error_line(f"{', '.join(r.name for r in bad)}: weights not usable ({problem})"), markup=False)
        raise typer.Exit(int(ExitCode.WEIGHTS))


@models_app.command("download", help="Fetch a model's weights from the Hugging Face Hub into its cache.")
def models_download(name: str = typer.Argument(..., show_default=False), as_json: bool = JsonOpt) -> None:
    from .weights import download, load_registry

    try:
        resolved = download(load_registry().get(name))
    except Exception as e:
        raise fail(e) from None
    if as_json:
        print_json({"name": name, "path": str(resolved.path), "source": resolved.source})
        return
    stdout.print(str(resolved.path), markup=False)


# ---------------------------------------------------------------------------------------------
# bench


def _bench_engine(name: Optional[str], device: str):
    """A registry name, or a path to a .safetensors file (to bench a fresh training export)."""
    from .pipeline import Engine

    # A path (registry names hold no slash): a file of another kind, e.g. a pickled .pt, is then
    # refused as such rather than looked up as a model name.
    if name is not None and (name.lower().endswith(".safetensors") or "/" in name or os.sep in name
                             or Path(name).is_file()):
        return Engine.load(weights=Path(name), device=device)
    return Engine.load(model=name, device=device)


@app.command("bench", help="Measure quality and speed of models on a folder of colour photos (offline).")
def bench_cli(
    data: Path = typer.Argument(..., help="Folder of colour photos (the ground truth).", show_default=False),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated registry names or .safetensors files "
                                         "(default: the default model). Baselines grey and prior always run."),
    samplers: Optional[str] = typer.Option(None, "--samplers", help="Settings to compare, e.g. ddim:20,ddpm:250."),
    saturations: Optional[str] = typer.Option(None, "--saturation", help="Colour strengths to compare, e.g. 1,1.5,2 "
                                              "(default: each model's own)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="psnr,ssim,deltae,cf,lpips,lpips-vgg,dists,fid,kid "
                                          "(default: psnr,ssim,deltae,cf,lpips,fid,kid, leaving out any whose package is not installed)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N images (sorted by name)."),
    size: Optional[int] = typer.Option(None, "--size", min=16, max=4096, help="Working size (default: each model's)."),
    device: str = DeviceOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Write results.json, results.md and a contact sheet here."),
    seed: int = SeedOpt,
    quiet: bool = QuietOpt,
) -> None:
    from .bench.runner import bench_command

    try:
        bench_command(data, models=models, samplers=samplers, saturations=saturations, metrics=metrics, limit=limit,
                      size=size, device=device, out=out, seed=seed, quiet=quiet,
                      command=["colorize", *sys.argv[1:]], engine_loader=_bench_engine)
    except Exception as e:
        raise fail(e) from None


# ---------------------------------------------------------------------------------------------
# train


@app.command("train", help="Train a model of the zoo on folders of photos and tar shards; resumable.")
def train_cli(
    ctx: typer.Context,
    data: Optional[List[Path]] = typer.Option(None, "--data", metavar="PATH", help="Image folders and/or .tar shards (repeatable; "
                                                                   "a resumed run reads its own)."),
    model: str = typer.Option("lab-ddpm", "--model", "-m", help="lab-ddpm, latent-cold, unet or unet-gan."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/MODEL-TIMESTAMP)."),
    resume: bool = _flag("--resume", help="Continue the run in --out exactly where it stopped."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimizer steps (default 10000)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (AdamW, warm-up then cosine decay)."),
    size: int = typer.Option(64, "--size", min=8, help="Training crop size (px)."),
    preset: str = typer.Option("small", "--preset", help="U-Net size: tiny, mini, small or base."),
    encoder: str = typer.Option("none", "--encoder", help="Pretrained semantic encoder: efficientnet-lite0 or none."),
    prediction: Optional[str] = typer.Option(None, "--prediction", help="lab-ddpm target: eps, v or x0."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="lab-ddpm noise schedule: linear or cosine."),
    head: str = typer.Option("regression", "--head",
                             help="unet/unet-gan output: regression (ab) or bins (ab-cell scores, annealed mean)."),
    seed: int = typer.Option(0, "--seed", min=0),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (one GPU of several) or mps."),
    compile: bool = _flag("--compile", help="torch.compile the step (fixed shapes; GPU)."),
    val_every: int = typer.Option(1000, "--val-every", min=1),
    ckpt_every: int = typer.Option(1000, "--ckpt-every", min=1),
    workers: int = typer.Option(4, "--workers", min=0, help="Data loader processes."),
    init_weights: Optional[Path] = typer.Option(None, "--init-weights", help="Start from an exported .safetensors."),
    perceptual_weight: float = typer.Option(0.1, "--perceptual-weight", help="unet/unet-gan: VGG16 loss weight."),
    adv_weight: float = typer.Option(0.01, "--adv-weight", help="unet-gan: adversarial loss weight."),
    colourfulness_weight: float = typer.Option(
        0.0, "--colourfulness-weight",
        help="unet/unet-gan: weight of the loss that matches each image's colourfulness to its truth's."),
    chroma_weight: float = typer.Option(
        0.0, "--chroma-weight",
        help="unet/unet-gan: weight of the loss that matches each pixel's colour strength |ab| to its truth's."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.0,
                                               help="Minutes to train before a clean stop (resume later)."),
    log_every: int = typer.Option(50, "--log-every", min=1),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    warmup_steps: int = typer.Option(500, "--warmup-steps", min=0),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Global gradient-norm clip (0: off)."),
    val_fraction: float = typer.Option(0.01, "--val-fraction", help="Share of images held out."),
    peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="MFU denominator (default: the device's)."),
    channels_last: bool = _flag("--channels-last", help="NHWC weights and activations (with --compile, inside the compiled graph too). Experimental: a compiled CUDA run diverged with it (docs/training.md)."),
    gan_start: float = typer.Option(0.3, "--gan-start", help="unet-gan: share of steps of regression warm-up."),
    vq_fraction: float = typer.Option(0.3, "--vq-fraction", help="latent-cold: share of steps for the VQ-VAE."),
    stage: str = typer.Option("auto", "--stage", help="latent-cold: auto, vq or cold."),
    encoder_lr_scale: float = typer.Option(0.0, "--encoder-lr-scale",
                                           help="Train the pretrained encoder too, at this share of --lr (0: frozen)."),
    quiet: bool = QuietOpt,
) -> None:
    from .imageio import OutputError
    from .train import MissingTrainingExtraError, TrainingDataError, TrainingError, train_command

    # On --resume, options left at their defaults keep the run's saved values (not the defaults).
    # By name: Typer may bring its own copy of click, with its own ParameterSource enum.
    given = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    try:
        result = train_command(data=data or [], given=given, model=model, out=out, resume=resume, steps=steps,
                               batch_size=batch_size, lr=lr, size=size, preset=preset, encoder=encoder,
                               prediction=prediction, schedule=schedule, head=head, seed=seed, device=device,
                               compile=compile,
                               val_every=val_every, ckpt_every=ckpt_every, workers=workers,
                               init_weights=init_weights, perceptual_weight=perceptual_weight,
                               adv_weight=adv_weight, colourfulness_weight=colourfulness_weight,
                               chroma_weight=chroma_weight, time_limit=time_limit, log_every=log_every,
                               ema_decay=ema_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
                               val_fraction=val_fraction, peak_tflops=peak_tflops, channels_last=channels_last,
                               gan_start=gan_start, vq_fraction=vq_fraction, stage=stage,
                               encoder_lr_scale=encoder_lr_scale, show_progress=not quiet)
    except KeyboardInterrupt as e:
        from .train.command import interrupted_advice

        # (getattr: the folder the run chose, when --out was not given)
        raise interrupted(interrupted_advice(getattr(e, "out", out))) from None
    except (MissingTrainingExtraError, TrainingDataError) as e:  # codes of their own: MISSING_EXTRA, BAD_INPUT
        raise fail(e) from None
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise fail(UsageError("out of memory: a training batch does not fit on this device; "
                              "try a smaller --batch-size (or --size)")) from None
    except (TrainingError, ValueError, FileNotFoundError) as e:
        raise fail(UsageError(error_message(e))) from None
    except (OutputError, OSError) as e:  # the run folder, its log or export cannot be written
        if isinstance(e, OSError) and exit_code_for(e) == ExitCode.USAGE:  # a name too long for the disk
            raise fail(e) from None
        raise fail(e if isinstance(e, OutputError) else OutputError(f"cannot write the run: {error_message(e)}")) from None
    stdout.print(str(result.export), markup=False)


def main() -> None:
    # libgomp's threads spin ~300k rounds before they sleep: when another busy process shares
    # the cores, every torch op then waits on descheduled spinners (5-20x slower; ACTIVE waiting,
    # 20-80x). A short spin keeps the idle-machine speed and most of the busy-machine speed
    # (docs/benchmarks.md). Only effective before torch is imported, and only if the user has
    # not chosen a policy.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    # Pillow warns about a damaged EXIF block ("Corrupt EXIF data", "Tag data larger than file",
    # ...) and then reads the image anyway: so do we, without its raw warning lines on stderr.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    # A failed download gets our one `Error:` line; the Hub client's retry notes and warnings
    # would only add noise to stderr (set here, for the command line: API users keep theirs).
    warnings.filterwarnings("ignore", module=r"huggingface_hub\.")
    # More `train --workers` than the machine has cores (the default 4 on a 2-core laptop) costs
    # only time; torch's raw warning about it, twice, is not an error to report.
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    # `kill` stops a run as Ctrl-C does: temporary files removed, finished outputs kept.
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        app()
    except KeyboardInterrupt:  # before or after a command runs (e.g. while Python imports)
        sys.exit(interrupted().exit_code)


def run() -> None:
    """The `colorize` executable: `main`, then an exit without the interpreter's teardown."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    # The command is over (its outputs written, its last line printed). A Ctrl-C or `kill` now, often
    # a second one for a run already stopping, ends the process at once: raised as a
    # KeyboardInterrupt it would land in some exit handler as a traceback.
    def end_now(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):  # what the command printed still arrives
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))

    signal.signal(signal.SIGINT, end_now)
    signal.signal(signal.SIGTERM, end_now)
    _exit_skipping_teardown(code)


def _exit_skipping_teardown(code) -> None:
    """Exit as `sys.exit(code)` would, without tearing down the interpreter.

    With torch loaded, Python's teardown (clearing a thousand modules, unloading libtorch) takes
    ~0.12 s of a 2-second `colorize photo.jpg` on two cores and does nothing a finished command
    needs: outputs are already closed and renamed into place. The exit handlers still run
    (temporary folders, logging) and Python's buffers are flushed; anything unusual (a thread
    still running, a stream that cannot be flushed, another Python) takes the ordinary exit.
    """
    import atexit
    import threading

    if (not isinstance(code, int) and code is not None) or threading.active_count() > 1 \
            or not hasattr(atexit, "_run_exitfuncs"):
        sys.exit(code)
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:
        sys.exit(code)
    os._exit(code or 0)
