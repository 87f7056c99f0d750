"""A student's name as it came (any string from a folder or an LMS) -> what files and outputs use.

The exact name is the key; files in OUT/ use `file_stem` (bounded, filesystem-safe, unique:
a plain name is its own stem, any other name a clipped slug plus a hash of its exact bytes,
and the "~" that joins them never appears in a plain name). Outputs show `display`: valid
Unicode, with the bytes of a non-UTF-8 folder name (kept by surrogateescape) as U+FFFD;
`exact_hex` keeps those bytes recoverable.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
SLUG_CHARS = 40
HASH_CHARS = 16
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def exact_bytes(name: str) -> bytes:
    """The name's bytes as the filesystem had them (surrogateescape undone); other lone surrogates kept."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def display(text) -> str:
    """Valid Unicode: every lone surrogate (an undecodable byte, or a broken pair) becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", str(text))


def is_valid_unicode(text: str) -> bool:
    return _SURROGATE.search(text) is None


def exact_hex(name: str) -> str | None:
    """The exact bytes in hex when `display` had to change the name; None when it shows as it is."""
    return None if is_valid_unicode(name) else exact_bytes(name).hex()


def file_stem(name: str) -> str:
    """A file name stem for OUT/: at most 100 safe characters, different for different exact names."""
    if PLAIN.match(name) and not name.endswith("."):
        return name
    ascii_text = unicodedata.normalize("NFKD", display(name)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:SLUG_CHARS].strip("-") or "student"
    return f"{slug}~{hashlib.sha256(exact_bytes(name)).hexdigest()[:HASH_CHARS]}"


def terminal(text) -> str:
    """For a terminal: valid Unicode, control characters (escape sequences, newlines, bidi overrides) as \\x.. escapes."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), display(text))


def result_stem(result: dict) -> str:
    """The stem of a student's files in OUT/, as their result recorded it (`file`), else from the name."""
    stem = result.get("file")
    if isinstance(stem, str) and PLAIN.match(stem.replace("~", "-")) and "/" not in stem:
        return stem
    return file_stem(str(result.get("student", "")))
