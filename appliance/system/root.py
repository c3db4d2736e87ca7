"""Files, links and folders under a root folder (``/`` on the device, a copy of it in tests), each
written atomically, touched only when it differs, and each change noted in the report."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import SystemSettingsError
from appliance.storage.files import atomic_file, fsync_dir

if TYPE_CHECKING:  # an annotation only: settings imports this module
    from appliance.system.settings import SystemReport

log = logging.getLogger(__name__)


class RootFiles:
    """Files, links and folders under a root folder, touched only when they differ, each change noted."""

    def __init__(self, root: Path, report: SystemReport):
        self.root, self.report = root, report
        self.is_live = root.resolve() == Path("/")
        self.is_root_user = os.geteuid() == 0

    def path(self, relative: str) -> Path:
        return self.root / relative

    def note(self, change: str) -> None:
        log.info("%s", change)
        self.report.changed.append(change)

    def warn(self, problem: str) -> None:
        log.warning("%s", problem)
        self.report.warnings.append(problem)

    def read_text(self, relative: str, default: str) -> str:
        try:
            return self.path(relative).read_text()
        except FileNotFoundError:
            return default
        except OSError as e:
            raise self._error(self.path(relative), e, "read") from None

    def write(self, relative: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None,
              label: str | None = None) -> bool:
        """Write atomically with this mode (and owner, when running as root) unless it is so already."""
        path, owner = self.path(relative), owner if self.is_root_user else None
        if self._is_already(path, data, mode, owner):
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, mode) as f:
                os.fchmod(f.fileno(), mode)  # the umask must not loosen or tighten it
                if owner:
                    os.fchown(f.fileno(), *owner)
                f.write(data)
        except OSError as e:
            raise self._error(path, e) from None
        self.note(label or relative)
        return True

    def link(self, relative: str, target: str) -> bool:
        """Make ``relative`` a symlink to ``target``, replacing whatever is there in one rename."""
        path = self.path(relative)
        if path.is_symlink() and os.readlink(path) == target:
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error(path, e) from None
        self.note(f"{relative} -> {target}")
        return True

    def remove(self, relative: str) -> bool:
        path = self.path(relative)
        if not (path.is_symlink() or path.exists()):
            return False
        try:
            path.unlink()
            fsync_dir(path.parent)
        except OSError as e:
            raise self._error(path, e, "removed") from None
        self.note(f"{relative}: removed")
        return True

    def mkdir(self, relative: str, mode: int, owner: tuple[int, int] | None = None) -> None:
        """A folder with this mode (and owner, when running as root)."""
        path, owner = self.path(relative), owner if self.is_root_user else None
        try:
            if path.is_dir() and stat.S_IMODE(path.stat().st_mode) == mode and (
                    owner is None or (path.stat().st_uid, path.stat().st_gid) == owner):
                return
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
            if owner:
                os.chown(path, *owner)
        except OSError as e:
            raise self._error(path, e) from None
        self.note(f"{relative}/")

    def _is_already(self, path: Path, data: bytes, mode: int, owner) -> bool:
        try:
            found = path.lstat()
            return (stat.S_ISREG(found.st_mode) and stat.S_IMODE(found.st_mode) == mode
                    and (owner is None or (found.st_uid, found.st_gid) == owner) and path.read_bytes() == data)
        except OSError:
            return False

    def _error(self, path: Path, error: OSError, verb: str = "written") -> SystemSettingsError:
        return SystemSettingsError(f"{path}: cannot be {verb} ({error.strerror or error}): run this as root (sudo), "
                                   f"with {self.root} mounted read-write")
