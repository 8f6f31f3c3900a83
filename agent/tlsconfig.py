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


class _NamedServerContext(ssl.SSLContext):
    """A client context that always verifies ``expected_name``, whatever host was dialled.

    For a broker reached by IP address or an internal alias whose certificate carries
    the public name (``tls.server_name``). Verification is never weakened: only the name
    checked changes.
    """

    expected_name: str

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap as the base class does, always checking ``expected_name``."""
        del server_hostname  # the dialled host; replaced by the configured name
        return super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.expected_name,
            session=session,
        )


def build_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """Build the client context from the config's files.

    Raises:
        TlsConfigError: a file is missing or unreadable, or the key does not match the
            certificate. Retrying cannot help until someone fixes the files.
    """
    context: ssl.SSLContext
    if tls.server_name:
        named = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
        named.expected_name = tls.server_name
        context = named
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
