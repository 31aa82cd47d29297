"""Ray Train's failure in one line: what each worker died of, for the command's error line.

``trainer.fit()`` raises once the workers have failed more than ``--max-failures`` times. Its message holds every
failed rank's whole traceback, or for a worker whose process died (killed, out of memory, crashed) a page about
the actor: useful in the log, not as the one line a command ends with. ``summary`` gives one clause a worker
("worker 1: UnavailableError: Collective ops is aborted by: ..."), and ``fit_ray`` logs the whole message first.
"""

from __future__ import annotations

import re

from scaleout.errors import ScaleoutError, first_line
from scaleout.train.ring import RingError

_EXIT_DETAIL = re.compile(r"Worker exit detail: (.*?)(?:\s+Some common causes|$)", re.S)
_WHERE = re.compile(r"^\s*pid: (\d+)\s*\n\s*(?:namespace: \S*\s*\n\s*)?ip: (\S+)", re.M)


def summary(exc: BaseException) -> str:
    """One line for Ray Train's error ``exc``: each failed worker's clause ("worker 0: ...; worker 1: ..."), the
    controller's error, or the first line of anything else."""
    failures = getattr(exc, "worker_failures", None)  # WorkerGroupError: {rank: its exception}
    if failures:
        return "; ".join(f"worker {rank}: {cause(failures[rank])}" for rank in sorted(failures))
    controller = getattr(exc, "controller_failure", None)  # ControllerError
    if controller is not None:
        return f"Ray Train's controller: {cause(controller)}"
    return cause(exc)


def cause(exc: BaseException) -> str:
    """What one worker died of: its own exception (scaleout's as it says; any other by its type and first line),
    or, where its process ended (Ray's health check found the actor dead), Ray's exit detail."""
    health = getattr(exc, "health_check_failure", None)  # WorkerHealthCheckFailedError
    if health is not None:
        exc = health
    exc = getattr(exc, "_base_exc", exc)  # UserExceptionWithTraceback: the worker's exception and its traceback
    exc = getattr(exc, "cause", None) or exc  # RayTaskError: the task's own exception
    if isinstance(exc, RingError):  # the socket ring's (scaleout.train.ring.raised_as_is): the clause names the
        return f"RingError: {exc.clause}"  # worker already
    if isinstance(exc, ScaleoutError):
        return first_line(exc)
    found = _EXIT_DETAIL.search(str(exc))
    if found:
        detail = " ".join(found.group(1).split())
        where = _WHERE.search(str(exc))
        process = f"its process (pid {where.group(1)} on {where.group(2)})" if where else "its process"
        return (f"{process} ended ({detail}): killed, out of memory, or crashed; that node's Ray logs (`ray logs "
                "cluster`) say which")
    return f"{type(exc).__name__}: {first_line(exc)}"
