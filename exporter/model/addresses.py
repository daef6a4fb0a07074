"""IP addresses as the programs store them (16 bytes, IPv4 in the first four), and as the
tools print them with a port."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address(raw: bytes, ipv6: bool) -> IPAddress:
    return ipaddress.IPv6Address(raw[:16]) if ipv6 else ipaddress.IPv4Address(raw[:4])


def endpoint(address: object, port: int) -> str:
    """"10.0.0.1:80", or "[fd00::1]:80": brackets keep an IPv6 address's colons apart."""
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
