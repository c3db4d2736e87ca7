"""The appliance's one family of errors.

Every error a user can cause or meet (a bad config file, a corrupt model, a missing camera, a full
disk) is an ``ApplianceError``. Each also inherits the builtin it resembles, so callers that only know
Python's own exceptions still catch it. The CLI prints ``str(error)`` as one line and exits non-zero.

Every error class the package raises on purpose is here. Modules may keep private exceptions that
never leave them (a signal between two of their own functions, caught a few lines up).
"""


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError, ValueError):
    """The config file is unreadable, has an unknown key, or a value of the wrong type or range.

    The message reads ``FILE: KEY: problem, allowed: …``.
    """

    def __init__(self, path, key, problem, allowed=None):
        self.path, self.key, self.problem, self.allowed = str(path), key, problem, allowed
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        message = where + problem + (f", allowed: {allowed}" if allowed else "")
        super().__init__(message)


class ModelError(ApplianceError, ValueError):
    """A model file is missing, corrupt, not TFLite, or does not fit the appliance."""


class CatalogError(ApplianceError, ValueError):
    """The models catalog is malformed, or a download or checksum failed."""


class AcceleratorMissing(ApplianceError, RuntimeError):
    """An accelerator (the Coral Edge TPU) was required by the config and is not there."""


class RuntimeMissing(ApplianceError, ImportError):
    """Neither LiteRT (``ai_edge_litert``) nor ``tflite_runtime`` can be imported."""


class CameraError(ApplianceError, RuntimeError):
    """The camera cannot be opened or stopped delivering frames."""


class ImageError(ApplianceError, OSError):
    """A photo cannot be decoded: not an image, damaged, or too many pixels to decode on the device."""


class StorageError(ApplianceError, OSError):
    """The data directory or database cannot be used (unwritable, corrupt, full)."""


class LoopNotRunning(ApplianceError, ConnectionError):
    """The capture loop does not answer on its control socket: it is stopped, starting or gone."""


class SystemSettingsError(ApplianceError, OSError):
    """A [system] setting cannot be applied: a missing time zone or user, a file that cannot be written."""


class GpioUnavailable(ApplianceError, RuntimeError):
    """The device has no usable GPIO (a laptop), or the pins cannot be claimed."""


class WebServerError(ApplianceError, OSError):
    """The page cannot listen where it was told to: the port is in use or privileged, the host is not an address."""


class OffloadError(ApplianceError, OSError):
    """The offload cannot start or had to stop: no stick, read-only, unsupported, busy."""


class SyncError(ApplianceError, ConnectionError):
    """Syncing from the appliance failed: it is unreachable, not an appliance, or it refused."""


class Unreachable(SyncError):
    """Nothing answers at the URL, or the connection broke mid-run."""


class NotAnAppliance(SyncError):
    """Something answers at the URL, but not the appliance's sync API."""


class WrongPassword(SyncError):
    """The appliance answered 401: the password is wrong."""


class SyncRefused(SyncError):
    """The appliance answered 403: it has no password set, so it hands nothing off."""


class DestinationError(ApplianceError, OSError):
    """DEST cannot be used: it holds another device's images, or writing there failed."""


class PasswordMissing(ApplianceError, ValueError):
    """No password was given, and there is no terminal to ask for one."""


class BenchmarkError(ApplianceError, RuntimeError):
    """A benchmark cannot measure: a step it runs (the loop, the page, a sync) failed, or its input does not fit."""


class NetworkError(ApplianceError, OSError):
    """NetworkManager refused or failed an action (opening the hotspot, joining the Wi-Fi); its own words."""


class LinkError(ApplianceError, ConnectionError):
    """A link (MQTT, the object store, a notification service) could not take an outbox entry now: it is
    tried again later. The message says what went wrong and, where a person can, what to change."""
