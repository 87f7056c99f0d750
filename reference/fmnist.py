"""Fashion-MNIST files: the IDX format, the official names and checksums, where they live.

Real and synthetic data go through the same reader, so whatever trains on the synthetic set
also reads the real one. numpy only: the grader imports this without paying for torch.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np

from grader.common.atomic import write_bytes_atomic
from grader.common.errors import UserError

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
MD5 = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}
FILES = tuple(MD5)
SYNTHETIC_MARKER = "SYNTHETIC.json"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).str.lstrip("<>|"): k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class DataInfo:
    """Which data a run saw: recorded in the reference artifact's provenance."""

    kind: str
    dir: str
    n_train: int
    n_test: int
    sha256: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "dir": self.dir, "n_train": self.n_train,
                "n_test": self.n_test, "sha256": dict(self.sha256)}


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "labgrader" / "fashion-mnist"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Argument, else $LABGRADER_DATA, else the user cache dir."""
    chosen = data_dir or os.environ.get("LABGRADER_DATA") or default_data_dir()
    return Path(chosen).expanduser()


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    return (Path(data_dir) / SYNTHETIC_MARKER).is_file()


def _hint(data_dir: Path, synthetic: bool) -> str:
    if synthetic:
        return f"write the synthetic set again with `labgrader data synth --out {data_dir}`"
    return (f"put the official file from {MIRROR} into {data_dir} "
            f"(`labgrader data fetch --data-dir {data_dir}`), or point LABGRADER_DATA elsewhere")


def _bad(path: Path, problem: str, synthetic: bool | None = None) -> UserError:
    if synthetic is None:
        synthetic = is_synthetic(path.parent)
    return UserError(f"{path.name} in {path.parent} {problem}; {_hint(path.parent, synthetic)}")


def _raw_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})")
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise _bad(path, f"is a damaged or truncated gzip file ({e})")


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read one IDX file, gzip or raw; every defect is a one-line UserError naming the file."""
    path = Path(path)
    data = _raw_bytes(path)
    if len(data) < 4:
        raise _bad(path, f"is truncated ({len(data)} bytes, no IDX header)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise _bad(path, f"has magic number 0x{found:08x}, expected 0x{magic:08x}")
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in _DTYPES or ndim == 0:
        raise _bad(path, f"is not an IDX file (magic number 0x{found:08x})")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise _bad(path, f"is truncated inside its header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    want = head + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < want:
        raise _bad(path, f"is truncated ({len(data)} bytes, its header {shape} needs {want})")
    if len(data) > want:
        raise _bad(path, f"has {len(data) - want} bytes after the data its header {shape} describes")
    return np.frombuffer(data, dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def idx_bytes(array: np.ndarray) -> bytes:
    a = np.asarray(array)
    key = a.dtype.str.lstrip("<>|=")
    if key not in _CODES:
        raise ValueError(f"IDX cannot store dtype {a.dtype}")
    header = bytes([0, 0, _CODES[key], a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return header + a.astype(_DTYPES[_CODES[key]], copy=False).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write IDX (gzip when the name ends in .gz, mtime 0 so equal arrays give equal bytes), atomically."""
    path = Path(path)
    payload = idx_bytes(array)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    return write_bytes_atomic(path, payload)


def find_file(data_dir: Path, name: str) -> Path | None:
    """The .gz file, else its raw IDX twin without .gz."""
    for candidate in (data_dir / name, data_dir / name[:-3]):
        if candidate.is_file():
            return candidate
    return None


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of one data file, as DataInfo records it; a one-line UserError when unreadable."""
    return _digest(Path(path), "sha256")


def _download_one(name: str, data_dir: Path) -> Path:
    url = MIRROR + name
    target = data_dir / name
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=data_dir)
    except OSError as e:
        raise UserError(f"cannot write {name} into {data_dir} ({e.strerror or e}); choose another folder with --data-dir or LABGRADER_DATA")
    try:
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        got = _digest(Path(tmp), "md5")
        os.chmod(tmp, 0o644)
        if got != MD5[name]:
            raise UserError(f"{name} downloaded from {url} has md5 {got}, expected {MD5[name]}; "
                            f"download it by hand into {data_dir}")
        os.replace(tmp, target)
    except (URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise UserError(f"cannot download {name} from {url} ({reason}); without network, put the official "
                        f"file into {data_dir} by hand, or use `labgrader data synth --out DIR` for synthetic data")
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def ensure_files(data_dir: Path, download: bool = True) -> dict[str, Path]:
    """Locate the four files, downloading the missing ones of a real data dir."""
    synthetic = is_synthetic(data_dir)
    found = {}
    for name in FILES:
        path = find_file(data_dir, name)
        if path is None:
            if synthetic or not download:
                raise UserError(f"{name} is missing from {data_dir}; {_hint(data_dir, synthetic)}")
            path = _download_one(name, data_dir)
        found[name] = path
    if not synthetic:
        for name, path in found.items():
            if path.name == name and _digest(path, "md5") != MD5[name]:
                raise _bad(path, "does not match the official md5 checksum "
                                 f"(and the folder has no {SYNTHETIC_MARKER})", synthetic=False)
    return found


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise _bad(images_path, f"holds {images.dtype} images of shape {images.shape[1:]}, expected uint8 28x28")
    if labels.dtype != np.uint8:
        raise _bad(labels_path, f"holds {labels.dtype} labels, expected uint8")
    if len(images) != len(labels):
        raise _bad(labels_path, f"has {len(labels)} labels but {images_path.name} has {len(images)} images")
    if len(labels) == 0:
        raise _bad(labels_path, "holds no examples")
    if labels.max() >= N_CLASSES:
        raise _bad(labels_path, f"has label {int(labels.max())}, expected 0..{N_CLASSES - 1}")
    return images.reshape(len(images), -1), labels


def load_arrays(data_dir: str | os.PathLike | None = None, download: bool = True):
    """-> (x_train u8[N,784], y_train u8[N], x_test, y_test, DataInfo); one-line UserError on any defect."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir() and not download:
        raise UserError(f"no Fashion-MNIST data dir at {root}; put the four official files from {MIRROR} there "
                        f"(`labgrader data fetch --data-dir {root}`), set LABGRADER_DATA to a folder that has them, "
                        f"or write synthetic data with `labgrader data synth --out {root}`")
    paths = ensure_files(root, download=download)
    x_train, y_train = _read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    x_test, y_test = _read_pair(paths[TEST_IMAGES], paths[TEST_LABELS])
    info = DataInfo(
        kind="synthetic" if is_synthetic(root) else "real",
        dir=str(root.resolve()),
        n_train=len(y_train),
        n_test=len(y_test),
        sha256={name: file_sha256(path) for name, path in paths.items()},
    )
    return x_train, y_train, x_test, y_test, info


def fetch_command(args) -> int:
    root = resolve_data_dir(getattr(args, "data_dir", None))
    if is_synthetic(root):
        raise UserError(f"{root} holds a synthetic dataset ({SYNTHETIC_MARKER}); fetch the real files into another folder with --data-dir")
    missing = [name for name in FILES if find_file(root, name) is None]
    ensure_files(root, download=True)
    verb = f"downloaded {len(missing)} file(s) into" if missing else "all four files already in"
    print(f"{verb} {root}; Fashion-MNIST (real) checked against the official md5 checksums")
    return 0


def fingerprint(*arrays: np.ndarray) -> str:
    """Digest of decoded arrays (shape, dtype, values): equal only for the same data, wherever it was read."""
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
