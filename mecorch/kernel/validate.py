"""Validators for every field that reaches a config file, a command line, a
backend object name or a path. Each returns the value (normalised) or raises
InvalidInput naming the field. Allow-lists, never deny-lists."""

from __future__ import annotations

import difflib
import ipaddress
import re

from mecorch.kernel.errors import InvalidInput

# Instance ids, host ids, rule ids, volume names: what can safely become part
# of a Docker/libvirt object name, an iptables chain or a file name.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A Docker image reference restricted to what the registry accepts:
# [host[:port]/]path[:tag][@sha256:hex]
_IMAGE_REF = re.compile(
    r"(?:(?P<host>[a-z0-9.-]+(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _fail(field: str, why: str):
    raise InvalidInput(f"{field}: {why}")


def text(value, field: str, max_len: int = 256) -> str:
    """Printable single-line text (no control characters at all)."""
    if not isinstance(value, str):
        _fail(field, "must be a string")
    if not value or len(value) > max_len:
        _fail(field, f"must be 1 to {max_len} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        _fail(field, "must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate ("\ud800" in the JSON): not Unicode text, and
        # not storable as the indexed column the store copies a name into
        _fail(field, "must be Unicode text (it holds a lone surrogate)")
    return value


def ident(value, field: str) -> str:
    """An identifier: letters, digits, '_', '.', '-'; 1-64 chars; starts
    with a letter or digit (so it can never read as an option)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        _fail(field, "must be 1-64 characters of letters, digits, '_', '.', '-', "
                     "starting with a letter or digit")
    if ".." in value:
        _fail(field, "must not contain '..'")
    return value


def image_ref(value, field: str = "image") -> str:
    if not isinstance(value, str) or len(value) > 255 or not _IMAGE_REF.fullmatch(value):
        _fail(field, "is not a valid image reference")
    return value


def split_image_ref(value: str) -> tuple[str | None, str, str]:
    """(registry host or None, repository path, tag) of a valid reference."""
    m = _IMAGE_REF.fullmatch(image_ref(value))
    return m.group("host"), m.group("path"), m.group("tag") or "latest"


def domain_name(value, field: str = "domainName") -> str:
    """An RFC 1123 host name (labels of letters, digits, '-'), lower-cased."""
    if not isinstance(value, str) or not 1 <= len(value) <= 253:
        _fail(field, "must be a host name of 1-253 characters")
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        _fail(field, "is not an RFC 1123 host name")
    return name.lower()


def ip_address(value, field: str, version: int | None = None) -> str:
    # '%' would admit an IPv6 scope id, which ipaddress takes as free text
    # (newlines, spaces, option text): refuse scoped addresses outright.
    if not isinstance(value, str) or len(value) > 45 or "%" in value:
        _fail(field, "must be an IP address")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        _fail(field, "must be an IP address")
    if version and addr.version != version:
        _fail(field, f"must be an IPv{version} address")
    return str(addr)


def network(value, field: str, version: int | None = None) -> str:
    """An address or a CIDR network ('10.0.0.0/24'), normalised."""
    if not isinstance(value, str) or len(value) > 49 or "%" in value:
        _fail(field, "must be an IP address or CIDR network")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        _fail(field, "must be an IP address or CIDR network")
    if version and net.version != version:
        _fail(field, f"must be an IPv{version} address or network")
    return str(net)


def port(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        _fail(field, "must be an integer port 1-65535")
    return value


def integer(value, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _fail(field, f"must be an integer from {lo} to {hi}")
    return value


def number(value, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        _fail(field, f"must be a number from {lo} to {hi}")
    return float(value)


def env(value, field: str = "env") -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 128:
        _fail(field, "must be a mapping of at most 128 variables")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_KEY.fullmatch(k):
            _fail(field, f"variable name {k!r} is not valid")
        if not isinstance(v, str) or len(v) > 4096 or "\x00" in v:
            _fail(f"{field}.{k}", "must be a string of at most 4096 characters without NUL")
        out[k] = v
    return out


def sha256(value, field: str = "checksum") -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        _fail(field, "must be 64 hexadecimal digits (SHA-256)")
    return value.lower()


def known_fields(body: dict, allowed, what: str) -> None:
    """A field mecorch does not know in a body whose schema it defines is a
    typo until proven otherwise: refuse it, naming it and the closest known
    field (a misspelled `deployementType` must not deploy by another
    manner)."""
    unknown = sorted((k for k in body if k not in allowed), key=str)
    if not unknown:
        return
    first = str(unknown[0])
    shown = first if len(first) <= 64 else first[:61] + "..."
    close = difflib.get_close_matches(first, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else \
        f"; its fields: {', '.join(sorted(allowed))}"
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    raise InvalidInput(f"{what} has no field {shown!r}{more}{hint}")
