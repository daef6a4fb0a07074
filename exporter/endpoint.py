"""How the command-line tools print an address with its port."""

from __future__ import annotations


def endpoint(address: object, port: int) -> str:
    """"10.0.0.1:80", or "[fd00::1]:80": brackets keep an IPv6 address's colons apart."""
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
