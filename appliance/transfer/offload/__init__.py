"""USB offload: copy every kept item not yet offloaded to a stick, verify it there, then mark it.

Layout on the stick: ``<stick>/<hostname>/<label>/<YYYY-MM-DD>_<file>.jpg`` (names safe on FAT, exFAT
and ext4), plus a per-run ``manifest-<UTC time>.csv`` / ``.jsonl`` in ``<stick>/<hostname>/``. Nothing
is written outside that folder.

Items go in batches. A batch is copied to temporary names beside their targets, made durable with
one sync of the stick's filesystem, renamed into place, its pages dropped from the page cache
(``posix_fadvise(DONTNEED)``), read back from the stick and compared with the sha256 the database
holds; the next batch's sync makes those renames durable, and only then is the batch's
``offloaded_at`` set. A copy already on the stick with the same size is read back and, if its sha256
matches, marked without copying again. A full, removed or read-only stick stops the run cleanly:
what was verified stays marked, nothing else is, and the next offload resumes.

The parts: ``run`` (the batches, the report, marking), ``copy`` (one item onto the stick),
``verify`` (the sync and the read-back), ``progress`` (the lock and the progress file).
"""

from appliance.transfer.offload.progress import OffloadLock, ProgressFile, is_offload_running, read_progress
from appliance.transfer.offload.run import OffloadReport, offload
from appliance.transfer.offload.verify import read_back_sha256s

__all__ = ["OffloadLock", "OffloadReport", "ProgressFile", "is_offload_running", "offload", "read_back_sha256s",
           "read_progress"]
