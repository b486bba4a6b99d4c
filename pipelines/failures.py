"""A pipeline's failure as the command can act on it.

Beam retries a failed bundle, logs each try with a traceback, and then reports the worker's error to the driver
as text inside an exception of its own. A disk error (a full disk, a read-only folder, a failing disk) must
still end as one line that says what to do, so it is raised again as the OSError it was.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

_OS_ERROR = re.compile(r"(?:OSError|PermissionError|FileNotFoundError): \[Errno (\d+)\] ([^:\]]+?)(?:: '(.*?)')?"
                       r"(?: \[while running|$)", re.MULTILINE)


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Runs a pipeline with Beam's per-try tracebacks logged only with --verbose, and its workers' disk errors
    raised as OSErrors."""
    beam_log = logging.getLogger("apache_beam")
    level = beam_log.level
    if logging.getLogger().level > logging.INFO:  # not --verbose
        beam_log.setLevel(logging.CRITICAL)
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        found = _OS_ERROR.search(str(err))
        if found is None:
            raise
        code, reason, path = found.groups()
        raise OSError(int(code), reason, path) from err
    finally:
        beam_log.setLevel(level)
