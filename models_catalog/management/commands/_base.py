"""The base class of every ModelXRef management command.

`manage.py lookup ... | head -1` closes the pipe while the command is still
writing. Python ignores SIGPIPE, so the next write (or the flush at exit)
raises BrokenPipeError and a traceback lands on the terminal. Unix tools
instead stop quietly; a shell reports them as 141 (128 + SIGPIPE), and so
does a command built on `PipeSafeCommand`.
"""
from __future__ import annotations

import os
import select
import signal
import sys

from django.core.management.base import BaseCommand

EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE


class PipeSafeCommand(BaseCommand):
    """A BaseCommand that ends quietly, with status 141, when the reader of its output goes away."""

    def run_from_argv(self, argv):
        # Only the command line goes through here; call_command() (tests, other code) is unchanged.
        try:
            try:
                super().run_from_argv(argv)
            finally:
                # Output still buffered would otherwise meet the closed pipe at interpreter
                # exit, where Python can only print "Exception ignored ... BrokenPipeError".
                sys.stdout.flush()
                sys.stderr.flush()
        except BrokenPipeError:
            closed = [stream for stream in (sys.stdout, sys.stderr) if is_widowed_pipe(stream)]
            if not closed:
                raise  # a pipe of some other kind broke: that is a real error, keep its traceback
            silence(closed)
            sys.exit(EXIT_PIPE_CLOSED)


def is_widowed_pipe(stream) -> bool:
    """True when `stream` writes into a pipe nobody reads any more."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence(streams) -> None:
    """Point the streams' file descriptors at /dev/null so whatever is still buffered drains quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams:
            os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
