"""The configuration file: one YAML file -> strict, frozen pydantic models.

Units are in the names. Unknown keys are refused. (Loader, line-numbered error reporting
and ``check-config`` are built on these models.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import DeviceSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubConfig(_Strict):
    """The hub itself."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    timezone: str = "UTC"  # IANA zone used to read device-local timestamps


class PatientConfig(_Strict):
    """Who this hub's devices belong to. Copied into every reading at capture."""

    id: str = Field(min_length=1, max_length=128)
    binding_version: int = Field(ge=1)


class TlsConfig(_Strict):
    """TLS to the broker. The server name is always verified; there is no opt-out."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None  # name to verify, when it differs from mqtt.host


class MqttConfig(_Strict):
    """The broker connection."""

    host: str
    port: int = Field(default=8883, ge=1, le=65535)
    tls: TlsConfig | None = None
    # Plaintext needs this explicit opt-in (lab/demo brokers on loopback only).
    insecure_plaintext: bool = False
    username: str | None = None
    password_file: Path | None = None
    topic_prefix: str = Field(default="wardlink", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    client_id: str | None = None  # default: the hub id
    keepalive_s: int = Field(default=60, ge=5, le=1200)
    protocol: Literal["5", "3.1.1"] = "5"
    batch_size: int = Field(default=50, ge=1, le=1000)
    inflight_window: int = Field(default=20, ge=1, le=1000)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=15.0, gt=0)


class StorageConfig(_Strict):
    """The SQLite outbox."""

    path: Path = Path("/var/lib/wardlink/outbox.db")
    capacity_readings: int = Field(default=2_000_000, ge=100)
    audit_window_h: float = Field(default=168.0, ge=0)
    group_commit_ms: float = Field(default=5.0, ge=0, le=1000)
    receipts: bool = False  # purge only after a backend receipt as well as PUBACK


class PayloadConfig(_Strict):
    """Wire format of readings."""

    format: Literal["fhir", "compact"] = "fhir"


class HealthConfig(_Strict):
    """Periodic retained health report."""

    interval_s: float = Field(default=60.0, ge=1)


class LoggingConfig(_Strict):
    """Log verbosity. Patient ids and values appear only at DEBUG."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Strict):
    """The whole file."""

    hub: HubConfig
    patient: PatientConfig
    mqtt: MqttConfig
    storage: StorageConfig = StorageConfig()
    payload: PayloadConfig = PayloadConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()
    devices: tuple[DeviceSettings, ...] = ()
