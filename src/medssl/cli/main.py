"""``medssl`` command line: one small module per sub-command, registered in `COMMANDS`.

Each command module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Errors the user can fix are
`MedSSLError`s: printed as one line ``error: ...`` on stderr (and as an ``error`` event with
``--progress json``), exit code 2, no traceback unless ``--debug``. Running out of memory (MemoryError, a
CUDA ``torch.OutOfMemoryError`` or the CPU allocator's RuntimeError) is reported the same way, with advice.
With ``--progress json`` every ending that is not a success sends an ``error`` event, so a reader of the events
(the Slicer modules) always has a reason to show: a usage error too, and an unexpected exception (a bug: its
traceback follows on stderr, exit code 1).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from typing import List, Optional

COMMANDS = ["finetune", "predict", "info", "weights", "pretrain", "export", "import", "rank", "export-onnx"]


_USAGE_ERRORS: List[str] = []  # what `OneLineErrorParser.error` printed (for the json error event)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line ``error: ...`` (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        line = f"{message} (see '{self.prog} --help')"
        _USAGE_ERRORS.append(line)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


def _wants_json(argv: List[str]) -> bool:
    """Whether the command line asks for ``--progress json`` (read before or without a successful parse)."""
    return "--progress=json" in argv or any(a == "--progress" and b == "json" for a, b in zip(argv, argv[1:]))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineErrorParser(prog="medssl", description="Few-label 3D segmentation from self-supervised "
                                "pretrained backbones.")
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name.replace('-', '_')}_cmd", __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name.replace('-', '_')}_cmd":
                raise
            continue
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        p.set_defaults(_run=module.run)
    return parser


def _terminate(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import MedSSLError

    from .cancel import watch_cancel_file

    signal.signal(signal.SIGTERM, _terminate)
    watch_cancel_file()  # the parent's graceful cancel where it cannot send SIGTERM (Windows)
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        if stop.code == 2 and _USAGE_ERRORS and _wants_json(argv):
            from ..events import JsonLinesSink

            JsonLinesSink().emit("error", message=_USAGE_ERRORS[-1], exit_code=2)
        raise
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    progress = getattr(args, "progress", "bar")
    try:
        return int(args._run(args) or 0)
    except MedSSLError as err:
        return _report(err, err.exit_code, progress, args.debug)
    except KeyboardInterrupt:
        return _report("cancelled by the user", 130, progress, args.debug)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        from ..errors import is_out_of_memory, out_of_memory_message

        if not is_out_of_memory(exc):
            _report_internal(exc, progress)
            raise
        return _report(out_of_memory_message(exc, args.command), 2, progress, args.debug, exc)
    except Exception as exc:
        _report_internal(exc, progress)
        raise


def _report_internal(exc: BaseException, progress: str) -> None:
    """The ``error`` event of an unexpected exception (its traceback follows on stderr)."""
    if progress == "json":
        from ..events import JsonLinesSink

        first = (str(exc).splitlines() or [""])[0][:300]
        JsonLinesSink().emit("error", message=f"internal error ({type(exc).__name__}: {first}); this is a bug in "
                                              f"medssl: please report it with the messages above", exit_code=1)


def _report(err, code: int, progress: str, debug: bool, cause: Optional[BaseException] = None) -> int:
    if debug and isinstance(cause or err, BaseException):
        traceback.print_exc()
    message = str(err)
    if progress == "json":
        from ..events import JsonLinesSink

        JsonLinesSink().emit("error", message=message, exit_code=code)
    print(f"error: {message}", file=sys.stderr)
    return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
