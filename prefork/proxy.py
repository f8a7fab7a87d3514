"""Client addresses behind a load balancer: trusted peers, the PROXY protocol (v1 and v2),
and X-Forwarded-* / Forwarded headers.

The rule: a claim about the client is believed only from a peer in --forwarded-allow-ips
(addresses and CIDRs; a unix-socket peer is always trusted, since only local processes
can reach it). Sans-I/O: bytes and strings in, addresses out.

PROXY protocol (haproxy's proxy-protocol.txt):
  v1: "PROXY" SP ("TCP4" / "TCP6") SP src SP dst SP sport SP dport CRLF, or
      "PROXY UNKNOWN" [anything] CRLF; at most 107 bytes.
  v2: the 12-byte signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n, a byte of version (2) and command
      (0 LOCAL, 1 PROXY), a byte of family and transport, a 16-bit length, the addresses.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Iterable, List, Optional, Tuple, Union

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
V2_MAX_PAYLOAD = 4096  # TLVs included; haproxy sends far less

Address = Tuple[str, int]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ProxyProtocolError(ValueError):
    """The PROXY header is malformed: the connection is closed without an answer."""


def parse_proxy_header(buf: bytes) -> Optional[Tuple[int, Optional[Address]]]:
    """(bytes consumed, client address or None for LOCAL/UNKNOWN), or None: need more."""
    if buf[:1] == b"\r":
        if len(buf) < 16:
            if not V2_SIGNATURE.startswith(buf[:12]):
                raise ProxyProtocolError("not a PROXY protocol header")
            return None
        return _parse_v2(buf)
    if buf[:1] == b"P":
        return _parse_v1(buf)
    raise ProxyProtocolError("not a PROXY protocol header")


def _parse_v1(buf: bytes) -> Optional[Tuple[int, Optional[Address]]]:
    if not b"PROXY "[:len(buf)] == buf[:6]:
        raise ProxyProtocolError("not a PROXY protocol header")
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line too long")
        return None
    parts = buf[:end].split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return end + 2, None
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 line")
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        ipaddress.ip_address(parts[3].decode("ascii"))
        sport, dport = int(parts[4]), int(parts[5])
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError("malformed PROXY v1 address") from None
    if (src.version == 4) != (parts[1] == b"TCP4") or not (0 <= sport <= 65535 and 0 <= dport <= 65535) \
            or not parts[4].isdigit() or not parts[5].isdigit():
        raise ProxyProtocolError("malformed PROXY v1 address")
    return end + 2, (str(src), sport)


def _parse_v2(buf: bytes) -> Optional[Tuple[int, Optional[Address]]]:
    if buf[:12] != V2_SIGNATURE:
        raise ProxyProtocolError("not a PROXY protocol header")
    ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
        raise ProxyProtocolError("unsupported PROXY v2 version or command")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError("PROXY v2 header too long")
    total = 16 + length
    if len(buf) < total:
        return None
    if ver_cmd & 0x0F == 0:  # LOCAL: the balancer's own health check
        return total, None
    family, transport = fam >> 4, fam & 0x0F
    if transport not in (0, 1, 2):
        raise ProxyProtocolError("unsupported PROXY v2 transport")
    if family == 1:  # AF_INET: src, dst, sport, dport
        if length < 12:
            raise ProxyProtocolError("short PROXY v2 IPv4 block")
        src = ipaddress.IPv4Address(buf[16:20])
        sport = struct.unpack_from("!H", buf, 24)[0]
        return total, (str(src), sport)
    if family == 2:  # AF_INET6
        if length < 36:
            raise ProxyProtocolError("short PROXY v2 IPv6 block")
        src = ipaddress.IPv6Address(buf[16:32])
        sport = struct.unpack_from("!H", buf, 48)[0]
        return total, (str(src), sport)
    if family in (0, 3):  # AF_UNSPEC, AF_UNIX: no client address to report
        return total, None
    raise ProxyProtocolError("unsupported PROXY v2 address family")


# ---------------------------------------------------------------------- trusted peers

def parse_networks(text: str) -> List[Network]:
    """'127.0.0.1,10.0.0.0/8,::1' → networks; '*' trusts every peer. ValueError if bad."""
    nets: List[Network] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "*":
            nets += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        nets.append(ipaddress.ip_network(item, strict=False))
    return nets


class TrustedProxies:
    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = list(networks)
        self._cache: dict = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer) -> bool:
        """`peer` is what accept() returned: a (host, port[, ...]) tuple, or a unix path."""
        if not isinstance(peer, tuple):
            return True  # a unix socket: only local processes reach it
        host = peer[0]
        known = self._cache.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            known = any(ip in net for net in self.networks)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = known
        return known


FORWARDING_FIELDS = ("forwarded", "x-forwarded-for", "x-forwarded-proto")  # what forwarded_client reads


def claims_forwarding(req) -> bool:
    """Whether `req` carries a field that forwarded_client reads. Three lookups in the
    parser's offsets (req.header) cost a tenth of building the header list that
    forwarded_client walks: most requests, even from a trusted peer, carry none."""
    header = req.header
    for name in FORWARDING_FIELDS:
        if header(name) is not None:
            return True
    return False


def forwarded_client(headers, peer_host: str, trusted: "TrustedProxies", scheme: str = "http") -> Tuple[str, str]:
    """(client host, scheme) as claimed by a trusted peer, from Forwarded (RFC 7239) or else
    X-Forwarded-For / X-Forwarded-Proto. The hop list is read from the right, each hop
    added by the proxy after it: the client is the first hop that is not itself a trusted
    proxy (so a client cannot spoof the list by sending its own header first). A hop that
    is not an IP address ends the walk."""
    forwarded = [v for k, v in headers if k == "forwarded"]
    hops: List[str] = []
    proto = scheme
    if forwarded:
        elements = ",".join(forwarded).split(",")
        for element in elements:
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.lower() == "for":
                    hops.append(_strip_port(value.strip().strip('"')))
        for pair in elements[-1].split(";"):
            key, _, value = pair.strip().partition("=")
            if key.lower() == "proto" and value.strip('" ').lower() in ("http", "https"):
                proto = value.strip('" ').lower()
    else:
        xff = [v for k, v in headers if k == "x-forwarded-for"]
        hops = [_strip_port(h.strip()) for h in ",".join(xff).split(",") if h.strip()]
        xfp = [v for k, v in headers if k == "x-forwarded-proto"]
        if xfp:
            value = xfp[-1].split(",")[-1].strip().lower()
            if value in ("http", "https"):
                proto = value
    host = peer_host
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # "unknown", an obfuscated name or garbage: no address to believe
        host = hop
        if not trusted.trusts((hop, 0)):
            break
    return host, proto


def _strip_port(value: str) -> str:
    if value.startswith("["):  # [v6]:port
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value
