"""TLS settings: the server's SSLContext from the configuration, and what a connection
tells the application about its TLS session.

The context is made in the master, before the workers fork: a certificate that does not
load is found there (one line and exit 2 at startup; on HUP the old workers stay), and
every worker inherits the same context, hence the same session-ticket keys, so a client
resumes its session whichever worker it reaches. A HUP makes a new context (new files,
new ticket keys) for the new workers.

The settings, and why:
- TLS 1.2 minimum (--tls-min-version 1.3 to raise it); TLS 1.2 ciphers from Mozilla's
  "intermediate" profile (prefork.config.DEFAULT_CIPHERS), TLS 1.3 suites OpenSSL's.
- ALPN offers http/1.1 only: this server speaks nothing else.
- No compression (CRIME), no renegotiation (a client could make the server do handshakes
  at will; OP_NO_RENEGOTIATION), the server's cipher order, a fresh ECDH key per handshake.
- Session resumption on: stateless tickets (shared by the workers, see above).
- SNI is accepted; one certificate answers every name.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
MIN_VERSION = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
ALPN = ["http/1.1"]


class TLSConfigError(ValueError):
    """The certificate, key, CA bundle or ciphers do not load; the message says which."""


def _password(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n")
    except OSError as exc:
        raise TLSConfigError(f"--keyfile-password-file {path!r}: {exc.strerror}") from None


def make_context(cfg) -> ssl.SSLContext:
    """The server context for `cfg` (which has a certfile). Raises TLSConfigError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION[cfg.tls_min_version]
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
                    | getattr(ssl, "OP_NO_RENEGOTIATION", 0))
    ctx.options &= ~ssl.OP_NO_TICKET
    try:
        ctx.set_ciphers(cfg.ciphers)
    except ssl.SSLError:
        raise TLSConfigError(f"--ciphers {cfg.ciphers!r}: no cipher that OpenSSL knows") from None
    password = _password(cfg.keyfile_password_file)
    what = f"--certfile {cfg.certfile!r}" + (f" / --keyfile {cfg.keyfile!r}" if cfg.keyfile else "")
    try:
        ctx.load_cert_chain(cfg.certfile, cfg.keyfile, password=password)
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{what}: not a matching PEM certificate and key ({exc.reason or exc})") from None
    except OSError as exc:
        raise TLSConfigError(f"{what}: {exc.strerror}") from None
    ctx.verify_mode = CERT_REQS[cfg.cert_reqs]
    if cfg.ca_certs is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"--ca-certs {cfg.ca_certs!r}: not a PEM CA bundle "
                                 f"({getattr(exc, 'reason', None) or exc})") from None
    ctx.set_alpn_protocols(ALPN)
    return ctx


def check(cfg) -> Optional[str]:
    """Why the TLS settings of `cfg` do not load, or None (also when TLS is off)."""
    if cfg.certfile is None:
        return None
    try:
        make_context(cfg)
    except TLSConfigError as exc:
        return str(exc)
    return None


def _dn(name) -> str:
    """An RFC 4514 string of a getpeercert() subject or issuer (most specific RDN first,
    as mod_ssl's SSL_CLIENT_S_DN is with LegacyDNStringFormat off)."""
    parts = []
    for rdn in reversed(name or ()):
        parts.append("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(parts)


_SHORT = {"commonName": "CN", "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
          "organizationName": "O", "organizationalUnitName": "OU", "emailAddress": "emailAddress",
          "domainComponent": "DC", "streetAddress": "STREET", "userId": "UID"}


def _escape(value: str) -> str:
    out = []
    for i, c in enumerate(value):
        if c in ',+"\\<>;=' or (c in " #" and i == 0) or (c == " " and i == len(value) - 1):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


class TLSInfo:
    """What a TLS connection tells the application, read once after the handshake:
    `version` ("TLSv1.3"), `cipher`, `alpn`, `sni` (not known here: None), `client_cert`
    (PEM of the verified client certificate, or None), `client_subject` / `client_issuer`
    (RFC 4514 strings, "" without a certificate), `client_verified`."""

    __slots__ = ("version", "cipher", "alpn", "client_cert", "client_subject", "client_issuer",
                 "client_verified", "server_cert")

    def __init__(self, sslobj, server_cert: Optional[str] = None) -> None:
        """`sslobj`: the SSLSocket or SSLObject, its handshake done."""
        self.version = sslobj.version() or ""
        cipher = sslobj.cipher()
        self.cipher = cipher[0] if cipher else ""
        self.alpn = sslobj.selected_alpn_protocol()
        self.server_cert = server_cert
        der = sslobj.getpeercert(True)
        if der:
            decoded = sslobj.getpeercert() or {}
            self.client_cert = ssl.DER_cert_to_PEM_cert(der)
            self.client_subject = _dn(decoded.get("subject"))
            self.client_issuer = _dn(decoded.get("issuer"))
            self.client_verified = True  # the context verified it, or the handshake failed
        else:
            self.client_cert = None
            self.client_subject = self.client_issuer = ""
            self.client_verified = False

    def environ(self) -> Dict[str, str]:
        """mod_ssl's names (as gunicorn's and mod_wsgi's applications read them)."""
        env = {"HTTPS": "on", "SSL_PROTOCOL": self.version, "SSL_CIPHER": self.cipher}
        if self.client_cert is not None:
            env["SSL_CLIENT_S_DN"] = self.client_subject
            env["SSL_CLIENT_I_DN"] = self.client_issuer
            env["SSL_CLIENT_CERT"] = self.client_cert
            env["SSL_CLIENT_VERIFY"] = "SUCCESS"
        else:
            env["SSL_CLIENT_VERIFY"] = "NONE"
        return env

    def asgi(self) -> Dict[str, Any]:
        """The ASGI TLS extension (asgiref's "tls" extension, version 0.0)."""
        return {
            "server_cert": self.server_cert,
            "client_cert_chain": [self.client_cert] if self.client_cert is not None else [],
            "client_cert_name": self.client_subject or None,
            "client_cert_error": None,
            "tls_version": _TLS_CODES.get(self.version),
            "cipher_suite": None,
        }


# The ASGI extension gives the version as the TLS protocol number.
_TLS_CODES = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_cert_pem(cfg) -> Optional[str]:
    """The server certificate (the first of --certfile) in PEM, for the ASGI extension."""
    try:
        with open(cfg.certfile) as f:
            text = f.read()
    except OSError:
        return None
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return None
    return text[start:end + len("-----END CERTIFICATE-----")] + "\n"
