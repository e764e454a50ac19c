"""``medssl`` command line: one small module per sub-command, registered in `COMMANDS`.

Each command module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Errors the user can fix are
`MedSSLError`s: printed as one line ``error: ...`` on stderr (and as an ``error`` event with
``--progress json``), exit code 2, no traceback unless ``--debug``. Running out of memory (MemoryError, a
CUDA ``torch.OutOfMemoryError`` or the CPU allocator's RuntimeError) is reported the same way, with advice.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from typing import List, Optional

COMMANDS = ["finetune", "predict", "info", "weights", "pretrain", "export", "import", "rank", "export-onnx"]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line ``error: ...`` (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


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
    args = parser.parse_args(argv)
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
            raise
        return _report(out_of_memory_message(exc, args.command), 2, progress, args.debug, exc)


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
