"""The configuration file: one YAML file -> strict, frozen pydantic models.

Units are in the names. Unknown keys are refused. Cross-field rules live here, on the
models, so a config built in Python (the demo, tests) obeys the same rules as one loaded
from YAML. Reading the file, line numbers and ``check-config`` are in
``agent/configload.py`` and ``agent/cli_config.py``.

A cross-field rule reports every violation it finds at once as one pydantic error of
type ``config_rule`` whose context holds (key, message) pairs; the loader turns each pair
into its own ``<file>:<line> <dotted.path>: <message>`` problem.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from collections import Counter
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from drivers.base import DeviceSettings

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class _Strict(BaseModel):
    # allow_inf_nan: "1e999" or ".inf" would pass a lower bound and mean "never".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


CONFIG_RULE_ERROR = "config_rule"  # pydantic error type of a broken cross-field rule


def _refuse(violations: list[tuple[str, str]]) -> None:
    """Raise one error naming every violated rule, one ``key: message`` per line.

    The error's context keeps the (key, message) pairs, so the loader can point each one
    at the line of its own key.
    """
    if violations:
        text = "\n".join(f"{key}: {message}" for key, message in violations)
        raise PydanticCustomError(
            CONFIG_RULE_ERROR, "{rules}", {"rules": text, "pairs": violations}
        )


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names this machine (127.0.0.0/8, ::1 or localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HubConfig(_Strict):
    """The hub itself."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="1-64 letters, digits, '-' or '_', starting with a letter or digit",
        examples=["hub-0042"],
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone used to read device-local timestamps",
        examples=["Europe/London"],
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # A wrong zone would shift every device-local timestamp: refuse it, never guess.
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            msg = f"{value!r} is not a known IANA time zone; expected e.g. Europe/London or UTC"
            raise ValueError(msg) from None
        return value


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

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        # Half a client identity would fail at connect time, far from the mistake.
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            _refuse(
                [(missing, "cert_file and key_file go together (mutual TLS); set both or neither")]
            )
        return self


class MqttConfig(_Strict):
    """The broker connection."""

    host: str = Field(min_length=1)
    port: int = Field(default=8883, ge=1, le=65535)
    tls: TlsConfig | None = None
    # Plaintext needs this explicit opt-in (lab/demo brokers on loopback only).
    insecure_plaintext: bool = False
    username: str | None = None
    password_file: Path | None = None
    topic_prefix: str = Field(
        default="wardlink",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="topic levels of letters, digits, '-' or '_' separated by '/'",
        examples=["wardlink/trust-a"],
    )
    client_id: str | None = None  # default: the hub id
    keepalive_s: int = Field(default=60, ge=5, le=1200)
    protocol: Literal["5", "3.1.1"] = "5"
    batch_size: int = Field(default=50, ge=1, le=1000)
    inflight_window: int = Field(default=20, ge=1, le=1000)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _transport_rules(self) -> Self:
        _refuse(_mqtt_violations(self))
        return self


def _mqtt_violations(mqtt: MqttConfig) -> list[tuple[str, str]]:
    """Every broken cross-field rule of the broker connection, as (key, message)."""
    violations: list[tuple[str, str]] = []
    if mqtt.tls is None and not mqtt.insecure_plaintext:
        need_tls = (
            "is required (e.g. tls: {ca_file: /etc/wardlink/ca.pem}); "
            "for a lab broker on loopback only set insecure_plaintext: true"
        )
        violations.append(("tls", need_tls))
    if mqtt.tls is not None and mqtt.insecure_plaintext:
        violations.append(("insecure_plaintext", "cannot be true while tls is set; remove one"))
    if mqtt.insecure_plaintext and not is_loopback_host(mqtt.host):
        # A clinical reading must never cross a network in clear.
        only_loopback = (
            "allowed only for a broker on this machine (127.0.0.1, ::1, localhost), "
            f"not {mqtt.host!r}; configure tls for any other host"
        )
        violations.append(("insecure_plaintext", only_loopback))
    if mqtt.password_file is not None and mqtt.username is None:
        violations.append(("password_file", "needs username as well; add mqtt.username"))
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        backoff = (
            f"{mqtt.reconnect_min_s:g} is more than reconnect_max_s ({mqtt.reconnect_max_s:g}); "
            "the minimum backoff must not exceed the maximum"
        )
        violations.append(("reconnect_min_s", backoff))
    return violations


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
    # deflate only when the backend honours the `content-encoding: deflate` user property.
    compression: Literal["none", "deflate"] = "none"
    # FHIR identifier system of patient.id (e.g. https://fhir.nhs.uk/Id/nhs-number).
    patient_id_system: str = Field(
        default="https://fhir.wardlink.org/Id/patient", pattern=r"^(https?|urn):\S+$"
    )


class HealthConfig(_Strict):
    """Periodic retained health report."""

    interval_s: float = Field(default=60.0, ge=1)


class BluetoothConfig(_Strict):
    """The hub's Bluetooth adapter and its recovery ladder (docs/ble.md, reliability.md §6.5).

    Each ``*_after_s`` counts from the moment the adapter was first judged failing; a rung
    is reached at most one ``probe_interval_s`` after its time. Rebooting is off by default.
    """

    adapter: str = Field(default="hci0", pattern=r"^hci[0-9]{1,2}$", examples=["hci0"])
    probe_interval_s: float = Field(default=30.0, ge=1, le=600)
    error_threshold: int = Field(default=3, ge=1, le=100)
    advert_silence_s: float | None = Field(default=None, ge=300)
    power_cycle_after_s: float = Field(default=60.0, ge=0, le=3600)
    restart_bluetooth_after_s: float = Field(default=300.0, ge=0, le=86_400)
    reboot_after_s: float | None = Field(default=None, ge=1800, le=7 * 86_400)
    max_reboots: int = Field(default=1, ge=1, le=3)
    recovered_after_s: float = Field(default=300.0, ge=1, le=86_400)

    @model_validator(mode="after")
    def _ladder_order(self) -> Self:
        # Each rung needs at least one probe to show whether the one below it helped.
        gap = self.probe_interval_s
        rungs = [
            ("restart_bluetooth_after_s", self.restart_bluetooth_after_s, "power_cycle_after_s"),
            ("reboot_after_s", self.reboot_after_s, "restart_bluetooth_after_s"),
        ]
        violations: list[tuple[str, str]] = []
        for key, value, below in rungs:
            least = getattr(self, below) + gap
            if value is not None and value < least:
                rule = f"{value:g} must be at least {below} + probe_interval_s ({least:g})"
                violations.append((key, rule))
        if self.recovered_after_s < gap:
            too_short = f"{self.recovered_after_s:g} is shorter than probe_interval_s ({gap:g})"
            violations.append(("recovered_after_s", too_short))
        _refuse(violations)
        return self


class LoggingConfig(_Strict):
    """Log verbosity. Patient ids and values appear only at DEBUG."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Strict):
    """The whole file.

    ``devices`` holds each driver's own validated settings object (a ``DeviceSettings``
    subclass). ``agent.configload`` picks the model from ``drivers.DRIVERS`` by each entry's
    ``driver:`` value; code that builds a Config in Python passes settings objects.
    """

    hub: HubConfig
    patient: PatientConfig
    mqtt: MqttConfig
    storage: StorageConfig = StorageConfig()
    payload: PayloadConfig = PayloadConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()
    bluetooth: BluetoothConfig = BluetoothConfig()
    devices: tuple[DeviceSettings, ...] = ()

    @model_validator(mode="after")
    def _unique_device_ids(self) -> Self:
        # Readings are keyed by device id; two devices under one id would mix their data.
        counts = Counter(device.id for device in self.devices)
        duplicates = sorted(device_id for device_id, n in counts.items() if n > 1)
        _refuse([("devices", f"device id {dup!r} is used more than once") for dup in duplicates])
        return self
