"""The TLS context for the broker connection: TLS >= 1.2, verified, never anything less.

There is deliberately no option to skip verification: a hub that talks to the wrong
broker sends a patient's readings to a stranger (reliability.md R7, ETSI 5.5-1).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from agent.errors import TlsConfigError

if TYPE_CHECKING:
    import socket

    from agent.config import TlsConfig


class HubTlsContext(ssl.SSLContext):
    """A client context that remembers the sockets it wrapped, and may pin the name.

    paho wraps the socket and runs the handshake inside ``connect``; when the handshake
    fails (wrong CA, wrong name) it raises without closing that socket. Keeping them here
    lets the publisher close them, so a hub retrying for days leaks no descriptors.

    ``expected_name`` (``tls.server_name``), when set, is the name verified whatever host
    was dialled (a broker reached by IP or internal alias). Verification is never
    weakened: only the name checked changes.
    """

    expected_name: str | None = None
    wrapped: list[ssl.SSLSocket]

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap as the base class does, checking ``expected_name`` when set."""
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.expected_name or server_hostname,
            session=session,
        )
        self.wrapped.append(wrapped)
        return wrapped

    def close_sockets(self) -> None:
        """Close every socket this context wrapped (after a failed attempt)."""
        for wrapped in self.wrapped:
            wrapped.close()
        self.wrapped.clear()


def build_ssl_context(tls: TlsConfig) -> HubTlsContext:
    """Build the client context from the config's files.

    Raises:
        TlsConfigError: a file is missing or unreadable, or the key does not match the
            certificate. Retrying cannot help until someone fixes the files.
    """
    context = HubTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    context.expected_name = tls.server_name
    context.wrapped = []
    # PROTOCOL_TLS_CLIENT already means CERT_REQUIRED + check_hostname; say it anyway so
    # nobody "simplifies" it away.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # Only the configured CA: the backend's CA is pinned, the system store is not used.
        context.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load the broker CA file {tls.ca_file}: {exc}. Check mqtt.tls.ca_file."
        raise TlsConfigError(msg) from exc
    if tls.cert_file is not None or tls.key_file is not None:
        if tls.cert_file is None:
            msg = "mqtt.tls.key_file is set but mqtt.tls.cert_file is not: set both or neither"
            raise TlsConfigError(msg)
        try:
            context.load_cert_chain(
                certfile=str(tls.cert_file),
                keyfile=None if tls.key_file is None else str(tls.key_file),
            )
        except (OSError, ssl.SSLError) as exc:
            msg = (
                f"cannot load the hub's client certificate {tls.cert_file} / key "
                f"{tls.key_file}: {exc}. Check the files exist, are readable by the "
                "wardlink user, and that the key belongs to the certificate."
            )
            raise TlsConfigError(msg) from exc
    return context
