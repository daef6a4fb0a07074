"""DNS codes and names as text: RR types and response codes by their IANA names, and domain
names in wire format as master-file text (RFC 1035 section 5.1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

# IANA "Resource Record (RR) TYPEs": the types a resolver's traffic commonly carries.
QTYPES: Mapping[int, str] = MappingProxyType({
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX",
    16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV",
    35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS",
    44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
})

# IANA "DNS RCODEs" up to 10 (the header's four bits), and those above that EDNS's extended
# RCODE can make (RFC 6891, RFC 7873); 16 is BADVERS there (BADSIG only inside TSIG).
RCODES: Mapping[int, str] = MappingProxyType({
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI",
    16: "BADVERS", 23: "BADCOOKIE",
})

# Ends a name the kernel copied only the start of. Not ASCII, so it cannot be read as part of
# a label: those are printable ASCII, everything else escaped.
CUT_MARK = "\u2026"

# The longest label; a larger length byte is a compression pointer (0xC0) or a label type
# nobody uses (0x40, 0x80).
MAX_LABEL = 63

# Each octet of a label as master-file text: printable ASCII as itself, the rest as \DDD, and
# so are '.' and '\' (they would read as a separator or an escape) and space (it would split
# the name where a line of output is read as fields). A table: names go by per packet.
_OCTETS = tuple(chr(octet) if 0x20 < octet < 0x7F and octet not in b".\\" else f"\\{octet:03d}"
                for octet in range(256))


def qtype_name(code: int) -> str:
    return QTYPES.get(code) or str(code)


def rcode_name(code: int) -> str:
    return RCODES.get(code) or str(code)


def label_text(label: bytes) -> str:
    # Lower case first: names compare without case, and resolvers randomise it (the 0x20 bit,
    # as a defence against spoofing), so the same name would otherwise print many ways.
    return "".join([_OCTETS[octet] for octet in label.lower()])


def dotted(labels: Iterable[bytes]) -> str:
    """The text of a whole name from its labels, without the trailing dot; the root is "."."""
    return ".".join([label_text(label) for label in labels]) or "."


def wire_name(raw: bytes, cut: bool = False) -> str:
    """The text of a name in wire form (labels, no compression) as the kernel copied it: all
    of it, or, with `cut` (the kernel copied fewer bytes than the name has) or when `raw`
    stops inside a label, what there is of it followed by CUT_MARK. Never raises."""
    labels: list[bytes] = []
    pos = 0
    # A missing zero ends the name where the labels end; a length byte above MAX_LABEL ends
    # it there too (a pointer cannot be followed without the rest of the message).
    while pos < len(raw) and 0 < raw[pos] <= MAX_LABEL:
        end = pos + 1 + raw[pos]
        if end > len(raw):
            cut = True
            if pos + 1 < len(raw):  # some of the label's bytes came
                labels.append(raw[pos + 1:])
            break
        labels.append(raw[pos + 1:end])
        pos = end
    if not cut:
        return dotted(labels)
    return ".".join([label_text(label) for label in labels]) + CUT_MARK
