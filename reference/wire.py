"""One message on the training service's socket: a JSON header, then the raw bytes of its tensors.

Both ends (the lab kit in a sandbox, the grader's service on the host) speak it, and the
memo cache stores answers in it, so no side ever unpickles what the other wrote. A frame is
MAGIC, the header's length (4 bytes, big-endian), the header (UTF-8 JSON with a "tensors"
list of {name, dtype, shape}), then each tensor's bytes in that order, little-endian and
C-contiguous. The reader checks every size against its limits before it allocates.

Only numpy is needed to read and write a frame: the grader's side of the service passes frames on
as numpy arrays (arrays=True) and never imports torch; the kit and the service's process get tensors.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

MAGIC = b"LGTS1\n"
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ("float32", "float64", "int64", "uint8")}
MAX_HEADER = 1 << 16
MAX_TENSORS = 16


class WireError(Exception):
    """A frame that cannot be read: its one-line reason says what was wrong."""


def encode(header: dict, tensors: dict | None = None) -> bytes:
    """-> one frame; header must not hold a "tensors" key of its own. tensors: torch tensors or numpy arrays."""
    tensors = tensors or {}
    described, blobs = [], []
    for name, t in tensors.items():
        if str(t.dtype).replace("torch.", "") not in DTYPES or getattr(t.dtype, "byteorder", "=") == ">":
            raise WireError(f"tensor {name!r} has dtype {t.dtype}, which the wire does not carry")
        a = t if isinstance(t, np.ndarray) else t.detach().cpu().contiguous().numpy()
        described.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        blobs.append(np.ascontiguousarray(a, dtype=DTYPES[a.dtype.name]).tobytes())
    body = json.dumps({**header, "tensors": described}, allow_nan=False, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(body)) + body + b"".join(blobs)


def read_frame(read, *, max_payload: int, max_header: int = MAX_HEADER, arrays: bool = False) -> tuple[dict, dict]:
    """Read one frame with read(n) -> exactly n bytes (or raise EOFError); -> (header, tensors):
    torch tensors, or numpy arrays with arrays=True (then torch is not imported).

    Raises WireError for anything malformed or over the limits, before reading the excess.
    """
    magic = read(len(MAGIC))
    if magic != MAGIC:
        raise WireError("the message does not start with the training service's protocol marker")
    (size,) = struct.unpack(">I", read(4))
    if size > max_header:
        raise WireError(f"the message header has {size} bytes, over the limit of {max_header}")
    try:
        header = json.loads(read(size).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise WireError(f"the message header is not valid JSON ({e})") from None
    except RecursionError:
        raise WireError("the message header nests too deeply to be a request") from None
    if not isinstance(header, dict):
        raise WireError("the message header must be a JSON object")
    specs = _tensor_specs(header.pop("tensors", []), max_payload)
    tensors = {}
    for name, dtype, shape, nbytes in specs:
        a = np.frombuffer(bytearray(read(nbytes)), dtype=dtype) if nbytes else np.zeros(0, dtype=dtype)
        tensors[name] = a.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    if tensors and not arrays:
        import torch

        tensors = {name: torch.from_numpy(a) for name, a in tensors.items()}
    return header, tensors


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _tensor_specs(described, max_payload: int) -> list[tuple[str, np.dtype, tuple, int]]:
    if not isinstance(described, list) or len(described) > MAX_TENSORS:
        raise WireError(f"the header's tensors must be a list of at most {MAX_TENSORS} entries")
    specs, total, seen = [], 0, set()
    for d in described:
        if not isinstance(d, dict) or set(d) != {"name", "dtype", "shape"}:
            raise WireError("each tensor must be described by exactly name, dtype and shape")
        name, dtype, shape = d["name"], d["dtype"], d["shape"]
        if not isinstance(name, str) or not name or len(name) > 64 or name in seen:
            raise WireError(f"tensor name {str(name)[:64]!r} is empty, too long or repeated")
        if dtype not in DTYPES:
            raise WireError(f"tensor {name!r} has dtype {str(dtype)[:32]!r}; allowed: {', '.join(DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > 4
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 31 for n in shape)):
            raise WireError(f"tensor {name!r} has shape {str(shape)[:64]}; expected at most 4 non-negative sizes")
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        total += nbytes
        if total > max_payload:
            raise WireError(f"the message's tensors exceed the limit of {max_payload} bytes")
        seen.add(name)
        specs.append((name, DTYPES[dtype], tuple(shape), nbytes))
    return specs


def socket_reader(sock):
    """read(n) over a connected socket: exactly n bytes, EOFError when the peer closed."""
    def read(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = sock.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError("the peer closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    return read


def bytes_reader(data: bytes):
    """read(n) over bytes in memory (a memo file)."""
    view, pos = memoryview(data), [0]

    def read(n: int) -> bytes:
        start = pos[0]
        if start + n > len(view):
            raise EOFError("the data ended early")
        pos[0] = start + n
        return bytes(view[start:start + n])
    return read
