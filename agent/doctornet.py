"""The broker checks of ``wardlink doctor``, one step at a time: DNS, TCP, TLS, MQTT.

Each step runs only if the one before passed, and a failure names the step and what to
do, so "cannot connect" becomes "TLS: the broker's certificate is not signed by the CA
in mqtt.tls.ca_file". The MQTT step logs in with the hub's own credentials under a
client id of its own (``<client id>-doctor``) so it never takes over the running agent's
session; it subscribes and publishes nothing.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.doctorchecks import Check
from agent.errors import TlsConfigError
from agent.tlsconfig import build_ssl_context
from agent.topics import AUTH_REFUSALS, reason_text

if TYPE_CHECKING:
    from agent.config import MqttConfig

STEP_TIMEOUT_S: Final = 5.0
_AUTH_ADVICE: Final[dict[int, str]] = {
    0x86: "check mqtt.username and the password in mqtt.password_file against the broker",
    # Mosquitto 2.0 answers a wrong password with 0x87, not 0x86 (seen in our tests).
    0x87: "the broker refuses this hub: check mqtt.username and the password in "
    "mqtt.password_file, and that the hub's username/certificate is enrolled on the broker",
    0x85: "the client id is refused: check mqtt.client_id (default: the hub id)",
    0x8A: "this hub is banned by the broker: ask the operations team",
}


def broker_checks(mqtt_cfg: MqttConfig, hub_id: str) -> list[Check]:
    """DNS -> TCP -> TLS -> MQTT; stops at the first failure and skips the rest."""
    checks: list[Check] = []
    dns = _dns(mqtt_cfg)
    checks.append(dns[0])
    address = dns[1]
    steps = ["broker TCP", "broker TLS", "broker MQTT"]
    if address is None:
        return checks + [_skipped(s, "broker DNS") for s in steps]
    tcp = _tcp(mqtt_cfg, address)
    checks.append(tcp)
    if tcp.status != "pass":
        return checks + [_skipped(s, "broker TCP") for s in steps[1:]]
    tls = _tls(mqtt_cfg, address)
    checks.append(tls)
    if tls.status == "fail":
        return [*checks, _skipped("broker MQTT", "broker TLS")]
    checks.append(_mqtt_login(mqtt_cfg, hub_id))
    return checks


def _skipped(name: str, because: str) -> Check:
    return Check(name, "skip", f"not tried: {because} failed")


def _dns(cfg: MqttConfig) -> tuple[Check, tuple[str, int] | None]:
    try:
        infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        check = Check(
            "broker DNS",
            "fail",
            f"cannot resolve {cfg.host}: {exc.strerror}",
            "check mqtt.host is spelt right and the hub has network and DNS "
            "(`resolvectl status`; on a mobile link, is there signal?)",
        )
        return check, None
    host, port = infos[0][4][0], int(infos[0][4][1])
    return Check("broker DNS", "pass", f"{cfg.host} -> {host}"), (str(host), port)


def _tcp(cfg: MqttConfig, address: tuple[str, int]) -> Check:
    try:
        with socket.create_connection(address, timeout=STEP_TIMEOUT_S):
            pass
    except TimeoutError:
        return Check(
            "broker TCP",
            "fail",
            f"no answer from {address[0]}:{cfg.port} within {STEP_TIMEOUT_S:.0f} s",
            "a firewall or the mobile network may be dropping the port; check the broker "
            "is reachable from this network",
        )
    except OSError as exc:
        return Check(
            "broker TCP",
            "fail",
            f"cannot connect to {address[0]}:{cfg.port}: {exc.strerror or exc}",
            "the broker is down or not listening on mqtt.port; ask operations whether it "
            "runs, and check mqtt.port",
        )
    return Check("broker TCP", "pass", f"connected to {address[0]}:{cfg.port}")


def _tls(cfg: MqttConfig, address: tuple[str, int]) -> Check:
    if cfg.tls is None:
        return Check("broker TLS", "skip", "plaintext (mqtt.insecure_plaintext: lab use only)")
    try:
        context = build_ssl_context(cfg.tls)
    except TlsConfigError as exc:
        return Check("broker TLS", "fail", str(exc), "fix the TLS files named in mqtt.tls")
    server_name = cfg.tls.server_name or cfg.host
    try:
        with (
            socket.create_connection(address, timeout=STEP_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check("broker TLS", "fail", _verify_detail(exc, server_name), _verify_advice(exc))
    except (ssl.SSLError, OSError) as exc:
        return Check(
            "broker TLS",
            "fail",
            f"TLS handshake failed: {exc}",
            "the port may not speak TLS, or the broker wants a client certificate "
            "(mqtt.tls.cert_file/key_file)",
        )
    return Check("broker TLS", "pass", f"{version}, certificate verified for {server_name}")


def _verify_detail(exc: ssl.SSLCertVerificationError, server_name: str) -> str:
    return f"the broker's certificate was refused for {server_name}: {exc.verify_message}"


def _verify_advice(exc: ssl.SSLCertVerificationError) -> str:
    message = (exc.verify_message or "").lower()
    if "hostname" in message or "ip address mismatch" in message:
        return (
            "the certificate is for another name: use the name it carries in mqtt.host "
            "or mqtt.tls.server_name"
        )
    if "expired" in message or "not yet valid" in message:
        return "check the hub clock first (see clock); otherwise the broker certificate expired"
    return "the certificate is not signed by the CA in mqtt.tls.ca_file: install the right CA file"


def _mqtt_login(cfg: MqttConfig, hub_id: str) -> Check:
    try:
        client = _client(cfg, hub_id)
    except (OSError, TlsConfigError) as exc:
        return Check("broker MQTT", "fail", str(exc), "check mqtt.password_file")
    done = threading.Event()
    codes: list[int] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, code: object, _p: object) -> None:
        codes.append(int(getattr(code, "value", code)))  # type: ignore[call-overload]
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, keepalive=30)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not done.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except (OSError, ssl.SSLError) as exc:
        return Check("broker MQTT", "fail", f"connection dropped during login: {exc}", None)
    finally:
        client.disconnect()
        client.loop(timeout=0.1)  # lets paho send DISCONNECT and close its socket
    return _login_result(codes)


def _login_result(codes: list[int]) -> Check:
    if not codes:
        return Check(
            "broker MQTT",
            "fail",
            f"no CONNACK within {STEP_TIMEOUT_S:.0f} s",
            "the port may not be an MQTT listener; check mqtt.port",
        )
    code = codes[0]
    if code == 0:
        return Check("broker MQTT", "pass", "logged in")
    advice = _AUTH_ADVICE.get(code, "see the broker's log for why it refused the hub")
    kind = "auth refused" if code in AUTH_REFUSALS else "refused"
    return Check("broker MQTT", "fail", f"{kind}: {reason_text(code)}", advice)


def _client(cfg: MqttConfig, hub_id: str) -> mqtt.Client:
    protocol = MQTTProtocolVersion.MQTTv5 if cfg.protocol == "5" else MQTTProtocolVersion.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id or hub_id}-doctor",
        protocol=protocol,
    )
    if cfg.tls is not None:
        client.tls_set_context(build_ssl_context(cfg.tls))
    if cfg.username is not None:
        password = None
        if cfg.password_file is not None:
            password = cfg.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        client.username_pw_set(cfg.username, password)
    return client
