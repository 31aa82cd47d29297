"""How a command or job ends: 0, or one line on stderr and a status (1 for our errors, an OSError or a full disk
in any library, 130 on Ctrl-C), never a traceback but for a bug."""

from __future__ import annotations

import _thread
import contextlib
import errno
import sys
import threading
from pathlib import Path
from typing import NoReturn

from scaleout.errors import ScaleoutError, first_line
from scaleout.storage import is_remote


def reported(prog: str, work, run: str | None, resumable: bool = False) -> int:
    """Runs ``work`` (a command's or job's whole work) and returns its exit status: 0; 1 with one line on stderr for
    scaleout's own errors, OSErrors and a full disk in any library (``error_line``); 130 with one line on Ctrl-C
    (``interrupted``: what ``work``'s blocks opened is closed by then: scratch removed, lock released). Anything
    else is a bug: raised, with its traceback."""
    try:
        with interrupts_not_lost():
            work()
    except KeyboardInterrupt:
        print(interrupted(prog, resumable), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (sorted by error_line: None is a bug)
        line = error_line(prog, exc, run)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    return 0


AGAIN_SECONDS = 0.05  # after a Ctrl-C lost in a finaliser, the main thread is interrupted again this much later


@contextlib.contextmanager
def interrupts_not_lost():
    """Within it, a Ctrl-C that Python raised inside a finaliser (a ``__del__``, such as TensorFlow's iterators'
    when an epoch ends, or a weakref callback) is not lost: Python prints such an exception as "Exception ignored"
    and goes on, so the command would train on with a traceback on its stderr. Here the main thread is interrupted
    again instead, once the finaliser is done (``_thread.interrupt_main`` from a timer's thread
    ``AGAIN_SECONDS`` later: the KeyboardInterrupt is raised where the main thread then runs Python, as a Ctrl-C's
    is; called in the hook it would be raised in the hook, and lost again), and nothing is printed; any other such
    exception goes to the hook there was. An interruption still pending when the block ends (it is already
    unwinding, or done) is cancelled, so that it cannot land after the command's last line."""
    before = sys.unraisablehook
    pending: list[threading.Timer] = []

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            again = threading.Timer(AGAIN_SECONDS, _thread.interrupt_main)
            again.daemon = True
            pending.append(again)
            again.start()
        else:
            before(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = before
        for again in pending:
            again.cancel()


def ended(main) -> NoReturn:
    """A script's ending (benchmarks/*.py): ``main()`` run through ``reported`` under the name it was started by,
    so that bad input ends it in one line and status 1, Ctrl-C in one line and 130; the status is ``main``'s own
    where it returns one."""
    said = []
    status = reported(sys.argv[0], lambda: said.append(main()), None)
    sys.exit(status or (said[0] if said and isinstance(said[0], int) else 0))


def interrupted(prog: str, resumable: bool) -> str:
    """The line ``prog`` ends with on Ctrl-C (status 130, as a shell gives)."""
    return (f"{prog}: interrupted; what it finished stays, and the next command on the run removes any output it "
            "left unfinished" + ("; `scaleout train --resume` (or `jobs/train.py --resume`) continues from the newest "
                                 "checkpoint" if resumable else ""))


def error_line(prog: str, exc: Exception, run: str | None) -> str | None:
    """The one line ``prog`` ends with for ``exc``: scaleout's own errors and OSErrors (disk full, permission
    denied, ...: they name the file) as they say, a full disk in any library (TensorFlow's ResourceExhaustedError
    while saving) by its first line; with a full disk, the free space where the run is written (``disks_free``).
    None for anything else: a bug, whose traceback is wanted."""
    full = _no_space(exc)
    if not (isinstance(exc, (ScaleoutError, OSError)) or full):
        return None
    said = str(exc) if isinstance(exc, (ScaleoutError, OSError)) else first_line(exc)  # TensorFlow's: one line
    return f"{prog}: error: {said}" + (f"; {disks_free(run)}" if full else "")


def _no_space(exc: BaseException) -> bool:
    """Whether ``exc`` may be a full disk: an OSError with ENOSPC, EDQUOT or EIO (ScaNN's "I/O error" writing its
    searcher: ``ScannIndex.save``), or any library's error saying so (TensorFlow's ResourceExhaustedError while
    saving a checkpoint, Arrow's)."""
    return (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)) or \
        "No space left on device" in str(exc)


def disks_free(run: str | None) -> str:
    """Where a full disk may be, for an error that does not say (Arrow's): the free space of the disk holding
    ``run`` (a local run) and of the temporary directory's, each named once."""
    import shutil
    import tempfile

    places, seen = [], set()
    for what, path in (("the run's", None if run is None or is_remote(run) else Path(run).resolve()),
                       ("the temporary directory's", Path(tempfile.gettempdir()))):
        while path is not None and not path.exists():  # a run not written yet: the disk it would be written to
            path = path.parent
        if path is None or path.stat().st_dev in seen:
            continue
        seen.add(path.stat().st_dev)
        usage = shutil.disk_usage(path)
        places.append(f"{what} ({path}) {usage.free / 2**20:,.1f} MiB of {usage.total / 2**20:,.1f} MiB")
    return "free space, its unfinished output removed: " + ", ".join(places)  # not what the failed write met
