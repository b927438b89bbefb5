"""Which network addresses the URLs a job's author writes may reach. A webhook's receiver and a pulled
source are fetched from inside the cluster: left unchecked, a job could make the operator or its
encoder read the cluster's own services or the cloud's metadata endpoint (server-side request forgery)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 addresses that carry an IPv4 one in their last 32 bits: NAT64's well-known prefix (RFC 6052),
# the deprecated IPv4-compatible addresses and IPv4-translated ones. A NAT64 gateway takes
# 64:ff9b::a9fe:a9fe to 169.254.169.254.
IPV4_IN_LAST_32_BITS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"),
                        ipaddress.ip_network("::ffff:0:0:0/96"))  # the last: SIIT (RFC 2765)
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: the IPv4 part may sit anywhere


def ip_of(address: str) -> IPAddress:
    """The address of a getaddrinfo answer or an IP literal (an IPv6 one may carry a %zone)."""
    return ipaddress.ip_address(address.split("%", 1)[0])


def is_public(address: str) -> bool:
    """Whether the address is out on the Internet: not loopback, private, link-local (cloud metadata),
    multicast or reserved, where a job's author could otherwise reach the cluster's own services. An
    IPv6 address that wraps an IPv4 one (mapped, 6to4, NAT64) is judged by the IPv4 one."""
    return _is_public_ip(ip_of(address))


def _is_public_ip(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in LOCAL_NAT64:
            return False
        wrapped = ip.ipv4_mapped or ip.sixtofour
        if wrapped is None and any(ip in network for network in IPV4_IN_LAST_32_BITS):
            wrapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if wrapped is not None:
            ip = wrapped
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> str | None:
    """The address `host` names without a resolver (an IP literal, also in the forms inet_aton reads:
    2130706433, 127.1, 0x7f.1, which some clients connect to as addresses), or None for a name."""
    try:
        return str(ip_of(host))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL in it
        return None


def pull_refusal(host: str, is_address: bool) -> str:
    """Why a pull from `host` is refused, in words for the job's status. The addresses a name resolves
    to are not named: they would tell a job's author the cluster's."""
    return (f"{host} {'is' if is_address else 'resolves to'} no public address: pulls from loopback, private "
            "and link-local addresses are refused (the installation allows networks of its own in "
            "encoder.pullAllowedNetworks)")


def storage_refusal(host: str, is_address: bool) -> str:
    """Why an S3 endpoint a job names at `host` is refused, in words for the job's status (as pull_refusal)."""
    return (f"{host} {'is' if is_address else 'resolves to'} no public address: an S3 endpoint a job names, "
            "other than the installation's own, may not be a loopback, private or link-local address (the "
            "installation allows networks of its own in encoder.storageAllowedNetworks)")


def allowed_addresses_now(host: str, port: int | None, policy: AddressPolicy,
                          refusal: Callable[[str, bool], str]) -> list[str]:
    """The addresses of `host` the policy allows, resolved now (blocking). NotPublicError with
    refusal(host, is_address) when there are none; socket.gaierror when the name does not resolve."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
    allowed = [address for address in addresses if policy.allows(address)]
    if not allowed:
        raise NotPublicError(refusal(host, literal is not None))
    return allowed


class NotPublicError(OSError):
    """A URL's host is (or resolves to) an address jobs may not reach."""


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, and those in networks the installation allows (its own origins, say)."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str | IPNetwork]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(network) for network in networks))

    def allows(self, address: str) -> bool:
        ip = ip_of(address)
        return _is_public_ip(ip) or any(ip in network for network in self.allowed_networks)
