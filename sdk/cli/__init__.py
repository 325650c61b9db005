"""The ``gramcast`` command: a thin shell over the Python API.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (a callable taking the parsed arguments and returning an
exit code). Add a module to ``COMMAND_MODULES`` to add a command.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from gramcast import __version__
from gramcast.cli.native_logs import filtered_stderr
from gramcast.errors import GramcastError

COMMAND_MODULES = [
    "gramcast.cli.doctor_cmd",
    "gramcast.cli.demo_cmd",
    "gramcast.cli.face_cmd",
    "gramcast.cli.avatar_cmd",
    "gramcast.cli.onnx_cmd",
    "gramcast.cli.sample_cmd",
    # Plug-ins from the server and training packages: the SDK never imports them otherwise.
    "gramcast.server.cli",
    "gramcast.training.evaluate_cmd",
]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line and exit 2, as every other refusal (argparse prints its usage first).
    Sub-commands' parsers, plug-ins' included, are made of this class too (``add_subparsers``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gramcast",
        description="Enroll a 3D avatar from one selfie, render it, and stream it into video calls.",
    )
    parser.add_argument("--version", action="version", version=f"gramcast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    # -v after the command too (`gramcast enroll -v ...`), where the error messages' "-v shows ..." sends
    # people. Added here rather than in each register() so that plug-ins get it as well; SUPPRESS keeps a
    # command's parser from overwriting a -v given before the command with its own default.
    for command in {id(p): p for p in sub.choices.values()}.values():
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details")
    return parser


class Terminated(BaseException):
    """SIGTERM (``kill``, a service manager stopping the command), raised where the command is, so that what
    it was writing is cleaned up on the way out (``media_io.atomic_output`` removes its temp file) as on
    Ctrl-C; the default action would end the process there and then. ``gramcast serve`` answers SIGTERM
    itself (it drains its calls)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises ``Terminated`` while the block runs, where nothing else has claimed the signal."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    with _closed_streams_discarded():
        return _main(argv)


@contextlib.contextmanager
def _closed_streams_discarded():
    """A command run with stdout or stderr closed (`>&-`, `2>&-`) writes its files and says nothing. A
    closed descriptor 0-2 is held by the null device (else the next file opened takes its number, and
    what a native library writes to "stderr" lands in it), and Python's missing streams (None) become
    writers to it: ``print(..., file=None)`` would print an error on stdout."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
    missing = [name for name in ("stdout", "stderr") if getattr(sys, name) is None]
    for name in missing:
        setattr(sys, name, open(os.devnull, "w"))
    try:
        yield
    finally:
        for name in missing:
            getattr(sys, name).close()
            setattr(sys, name, None)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:      # --help, --version, a usage error: its code, as every other outcome
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.progress = _is_terminal(sys.stderr)    # asked now: filtered_stderr makes descriptor 2 a pipe
    # the native libraries' log lines only with --verbose (gramcast.cli.native_logs)
    with contextlib.nullcontext() if args.verbose else filtered_stderr(), _sigterm_unwinds():
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()     # here, where a reader that went away is answered below, not at exit
            return code
        except GramcastError as exc:
            print(f"gramcast {args.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"gramcast {args.command}: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            print(f"gramcast {args.command}: terminated", file=sys.stderr)
            return 143
        except BrokenPipeError:
            # the reader of our output went away (`gramcast info me.gca | head -1`): nothing more to say to it,
            # and Python's flush of stdout at exit must not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except OSError as exc:      # the file system's refusals (permissions, a full disk): one line, not a trace
            if args.verbose:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"gramcast {args.command}: error: {exc.strerror or exc}{where}; -v shows where it happened",
                  file=sys.stderr)
            return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
