"""One exception hierarchy for the whole agent.

Callers choose by type, never by message text. Third-party exceptions are translated
once, at the seam where they enter (``raise ... from exc``), with advice a technician can
act on.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error wardlink raises on purpose."""


class ConfigError(AgentError):
    """The configuration file cannot be used. ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        """Keep every problem so the CLI can print all of them at once."""
        super().__init__("\n".join(problems))
        self.problems = problems


class DecodeError(AgentError, ValueError):
    """A device packet is malformed. The message names the field, expected and actual."""

    def __init__(self, field: str, message: str) -> None:
        """Name the offending field so the counted-and-skipped log line is actionable."""
        super().__init__(f"{field}: {message}")
        self.field = field


class DeviceError(AgentError):
    """A device session failed.

    ``str()`` is the actionable text for the device status (it may name the device's
    serial or address); ``log_text`` is what a log line at INFO and above may say, the
    same unless the raiser gives a shorter one without device identifiers.
    """

    def __init__(self, message: str, *, log_text: str | None = None) -> None:
        """Keep the status text and the log text apart."""
        super().__init__(message)
        self.log_text = message if log_text is None else log_text


class TransientDeviceError(DeviceError):
    """Worth retrying soon: link dropped, port vanished, timeout."""


class PermanentDeviceError(DeviceError):
    """Retrying will not help until someone acts: wrong serial, missing port, bad pairing."""


class OutboxError(AgentError):
    """The outbox could not store or update readings (disk full, I/O error, corruption)."""


class PublishError(AgentError):
    """The broker connection failed in a way the publisher reports and retries."""


class TlsConfigError(PublishError):
    """TLS cannot be set up from the configured files; retrying will not help."""
