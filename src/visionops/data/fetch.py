"""Downloading one URL of a manifest without letting the manifest reach where it should not.

A URL manifest is data a user was handed: its rows must not be able to make the pipeline's workers
talk to the machine they run on, to the cloud's metadata service or to the private network behind
them (server-side request forgery). Every hop is checked the same way:

- the scheme is http or https (a redirect to ``ftp://`` or ``file://`` is refused like a row);
- the host name is resolved once, and every address it resolves to must be global (not loopback,
  link-local, private, shared, multicast, reserved or unspecified, IPv4 or IPv6, IPv4-mapped IPv6
  included) unless ``data.allow_private_hosts`` names the host or a network holding the address;
- the connection goes to the address that was checked (the host name is sent as ``Host`` and as the
  TLS server name, and the certificate is verified against it), so a second DNS answer cannot swap
  in a private address between the check and the connection (DNS rebinding);
- redirects are followed by hand, at most ``MAX_REDIRECTS``, each one checked as above;
- one deadline covers the whole download (every hop, every read): a server that drips a byte at a
  time cannot hold a worker past ``data.download_timeout_s``.

urllib3 (already installed with requests and MLflow) does the HTTP; what it lacks is the address
policy and the overall deadline, written here.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_PORTS = {"http": 80, "https": 443}
USER_AGENT = "visionops-ingest"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL (or a hop it redirected to) may not be fetched: the message says why; not retried."""


class Deadline(Exception):
    """The download did not finish within its deadline; not retried (a slow server stays slow)."""


class Transient(Exception):
    """A failure that may pass on a retry: no connection, a reset, a 5xx answer."""


@dataclass(frozen=True)
class HostPolicy:
    """Which non-global hosts a manifest may reach: none by default (``data.allow_private_hosts``).

    Entries are host names (matched case-insensitively against the URL's host) or IP networks in
    CIDR notation (a single address is a /32 or /128)."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> HostPolicy:
        names, networks = set(), []
        for entry in entries:
            entry = entry.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, address: Address) -> bool:
        if host.lower().rstrip(".") in self.names:
            return True
        return any(address in net for net in self.networks if net.version == address.version)


def is_public(address: Address) -> bool:
    """Routable on the public internet: what a manifest may reach without an allow-list entry."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (literal addresses as they are)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Transient(f"unreachable: cannot resolve {host!r}: {exc}") from exc
    seen: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


def checked_address(url: str, policy: HostPolicy) -> tuple[str, str, int, Address]:
    """(scheme, host, port, the address to connect to) for ``url``, or Refused naming why."""
    parts = urlsplit(url)
    if parts.scheme not in _PORTS:
        raise Refused(f"scheme of {url!r} is not http or https")
    host = parts.hostname
    if not host:
        raise Refused(f"{url!r} names no host")
    try:
        port = parts.port or _PORTS[parts.scheme]
    except ValueError as exc:
        raise Refused(f"{url!r}: {exc}") from exc
    addresses = resolve(host, port)
    if not addresses:
        raise Transient(f"unreachable: {host!r} resolves to no address")
    for address in addresses:
        if not is_public(address) and not policy.allows(host, address):
            raise Refused(
                f"{host} resolves to {address}, which is not a public address "
                "(add it to data.allow_private_hosts to fetch from your own network)"
            )
    return parts.scheme, host, port, addresses[0]


def _pool(scheme: str, host: str, port: int, address: Address, timeout: float):
    """A one-connection pool to ``address`` that still speaks to ``host`` (Host header, SNI, cert)."""
    options = {"timeout": urllib3.Timeout(connect=timeout, read=timeout), "retries": False}
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            str(address),
            port,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            **options,
        )
    return urllib3.HTTPConnectionPool(str(address), port, **options)


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes | None  # None when the body was not read (an error status, a wrong type)
    too_large: bool = False


def download(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    policy: HostPolicy,
    accept=lambda content_type: True,  # noqa: ANN001 - a predicate on the Content-Type
) -> Answer:
    """GET ``url`` within ``timeout`` seconds in all, following checked redirects.

    Raises Refused (an address or scheme the policy forbids, too many redirects), Deadline or
    Transient; an HTTP error status is returned, not raised. The body is read only when ``accept``
    takes its Content-Type, and never past ``max_bytes`` + 1 bytes.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline(f"no answer within {timeout:g}s")
        return remaining

    for _hop in range(MAX_REDIRECTS + 1):
        scheme, host, port, address = checked_address(url, policy)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host:  # an IPv6 literal goes back in brackets
            netloc = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
        with _pool(scheme, host, port, address, left()) as pool:
            try:
                response = pool.urlopen(
                    "GET",
                    target,
                    headers={"Host": netloc, "User-Agent": USER_AGENT, "Accept": "image/*"},
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    timeout=urllib3.Timeout(connect=left(), read=left()),
                )
            except urllib3.exceptions.TimeoutError as exc:
                raise Deadline(f"no answer within {timeout:g}s") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise Transient(f"unreachable: {exc}") from exc
            try:
                if response.status in _REDIRECTS and response.headers.get("Location"):
                    url = urljoin(url, response.headers["Location"])
                    continue
                kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if response.status >= 300 or not accept(kind):
                    return Answer(response.status, kind, None)
                return _read(response, kind, max_bytes, left, timeout)
            finally:
                response.release_conn()
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def _read(response, kind: str, max_bytes: int, left, timeout: float) -> Answer:  # noqa: ANN001
    chunks, size = [], 0
    while size <= max_bytes:
        remaining = left()
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:  # the next read may not outlive the deadline either
            sock.settimeout(remaining)
        try:
            chunk = response.read1(min(_CHUNK, max_bytes + 1 - size))
        except urllib3.exceptions.TimeoutError as exc:
            raise Deadline(f"no answer within {timeout:g}s") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Transient(f"unreachable: {exc}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    left()  # a read that ended past the deadline does not count as a download
    if size > max_bytes:
        return Answer(response.status, kind, None, too_large=True)
    return Answer(response.status, kind, b"".join(chunks))
