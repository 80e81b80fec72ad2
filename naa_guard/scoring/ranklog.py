"""The ranks' log of a ``--nproc`` audit: every line torchrun and its ranks write to stderr, kept in a file.

The terminal gets the lines a person acts on (progress, warnings, naa-guard's own messages) but
no Python traceback (a rank's or torchrun's) and none of torchrun's own log lines or failure
report: a run that fails ends in one naa-guard line that names the failed rank and this file.
The file is kept when the run ends without a result (``keep``); a run that gives one removes it.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import IO

_RANK_PREFIX = re.compile(r"^\[[\w-]+\]: ?")  # torchrun's per-rank prefix, where it adds one
_GLOG = re.compile(r"^[IWEF]\d{4} ")  # torchrun's own log lines (glog style)
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_TRACEBACK = "Traceback (most recent call last):"
_REPORT_RULE = "=" * 20  # torchrun's failure report is framed by such lines


class RankLog:
    """One run's log file, and the filter that decides which of its lines the terminal sees."""

    def __init__(self, folder: Path | None = None) -> None:
        handle, name = tempfile.mkstemp(prefix="naa-guard-ranks-", suffix=".log", dir=folder)
        self.path = Path(name)
        self._file: IO[str] = os.fdopen(handle, "w", encoding="utf-8", errors="replace")
        self._in_traceback = False
        self._in_report = False
        self._lock = threading.Lock()  # a reader thread may still write while the launcher closes the file

    def write(self, line: str) -> bool:
        """Keep ``line`` in the file; return whether the terminal should see it too."""
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()
        text = line.rstrip("\n")
        bare = _RANK_PREFIX.sub("", text)
        if self._in_report:  # torchrun's failure report, up to its closing rule
            self._in_report = not bare.startswith(_REPORT_RULE)
            return False
        if bare.startswith(_REPORT_RULE):
            self._in_report = True
            return False
        if bare.startswith(_TRACEBACK) or bare.startswith(_CHAINED):
            self._in_traceback = True
            return False
        if self._in_traceback:  # indented frames, then the exception line at column 0 ends it
            self._in_traceback = not bare or bare[0].isspace()
            return False
        return not _GLOG.match(bare)

    def close(self, *, keep: bool) -> Path | None:
        """Close the file; remove it unless ``keep``. Return its path when kept."""
        with self._lock:
            self._file.close()
        if keep:
            return self.path
        self.path.unlink(missing_ok=True)
        return None
