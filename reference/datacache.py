"""The decoded data cache: get_data's arrays decoded once by the grader, mapped by every notebook.

`labgrader grade` (trusted, before any notebook runs) decodes the data dir's four IDX files into
raw little-endian files, exactly as `kit.get_data` returns them (pixels float32 / 255, labels
int64), in a folder of labgrader's cache keyed by the files' sha256 digests: the data dir itself
may be read-only or shared. The grader checks every file against the manifest each time it binds
the cache (once per run); a damaged cache is removed and rebuilt, never trusted. The sandbox shows
the folder read-only and names it in KIT_ENV; the kit maps it copy-on-write without hashing it
again, and decodes the gzip files itself when anything there looks wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from reference import fmnist

FORMAT = "labgrader-decoded/1"
ROOT_ENV = "LABGRADER_DATA_CACHE"
KIT_ENV = "LABGRADER_DECODED_DATA"
MANIFEST = "manifest.json"
ARRAYS = {"x_train": "<f4", "y_train": "<i8", "x_test": "<f4", "y_test": "<i8"}
CHUNK_ROWS = 8192
STALE_S = 24 * 3600
ATTEMPTS = 3


class CacheProblem(Exception):
    """Why a cache folder cannot be trusted, in a few words."""


def default_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "labgrader" / "decoded"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Argument (--data-cache), else $LABGRADER_DATA_CACHE, else the user cache folder."""
    return Path(root or os.environ.get(ROOT_ENV) or default_root()).expanduser()


# the grader's side: build, verify, bind ------------------------------------------------------------

def prepare(data_dir: str | os.PathLike, root: str | os.PathLike | None = None, say=None) -> tuple[Path, str]:
    """The verified cache folder for data_dir and what was done ("built" or "checked").

    A damaged folder is named in one line through say(), removed and rebuilt. Raises CacheProblem or
    OSError (the caller grades without the cache) and UserError for a defect of the data itself.
    """
    say = say or (lambda line: None)
    data_dir = fmnist.resolve_data_dir(data_dir)
    root = resolve_root(root)
    digests = _gzip_digests(data_dir)
    kind = "synthetic" if fmnist.is_synthetic(data_dir) else "real"
    folder = root / _key(kind, digests)
    _sweep(root)
    for _ in range(ATTEMPTS):
        if os.path.lexists(folder):
            try:
                verify(folder, digests)
                return folder, "checked"
            except CacheProblem as e:
                say(f"data cache {folder} is damaged ({e}); removing and rebuilding it")
                _discard(folder)
        if _build(data_dir, folder, kind, digests):
            return folder, "built"
    raise CacheProblem(f"{folder} kept changing while it was being built")


def verify(folder: Path, digests: dict | None = None) -> dict:
    """The manifest, once every file matches its recorded size and sha256; else CacheProblem."""
    manifest = read_manifest(folder)
    everyone = stat.S_IROTH | stat.S_IXOTH
    if folder.stat().st_mode & everyone != everyone:
        raise CacheProblem("the folder is not world-readable")
    if digests is not None and manifest["gzip_sha256"] != digests:
        raise CacheProblem("its manifest names other data files")
    for name, entry in manifest["files"].items():
        path = folder / entry["file"]
        size = _regular_size(path)
        if size != entry["size"]:
            raise CacheProblem(f"{entry['file']} has {size} bytes, its manifest says {entry['size']}")
        if _sha256(path) != entry["sha256"]:
            raise CacheProblem(f"{entry['file']} does not match its sha256 in the manifest")
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest, checked for shape (not the files' contents); CacheProblem when missing or garbled."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise CacheProblem("it is not a folder")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheProblem(f"{MANIFEST} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CacheProblem(f"{MANIFEST} cannot be read ({type(e).__name__})") from None
    try:
        if manifest["format"] != FORMAT:
            raise CacheProblem(f"{MANIFEST} has format {manifest['format']!r}, expected {FORMAT!r}")
        files = manifest["files"]
        if set(files) != set(ARRAYS) or not isinstance(manifest["gzip_sha256"], dict):
            raise CacheProblem(f"{MANIFEST} lists other files than {', '.join(ARRAYS)}")
        for name, dtype in ARRAYS.items():
            entry = files[name]
            shape = tuple(entry["shape"])
            if entry["dtype"] != dtype or not all(type(n) is int and n > 0 for n in shape):
                raise CacheProblem(f"{MANIFEST} gives {name} dtype {entry['dtype']!r} and shape {list(shape)}")
            if entry["size"] != int(np.prod(shape)) * np.dtype(dtype).itemsize or entry["file"] != _file_name(name):
                raise CacheProblem(f"{MANIFEST} gives {name} a size or name that does not fit its shape")
        n_train, n_test = manifest["n_train"], manifest["n_test"]
        if files["x_train"]["shape"] != [n_train, 784] or files["y_train"]["shape"] != [n_train] \
                or files["x_test"]["shape"] != [n_test, 784] or files["y_test"]["shape"] != [n_test]:
            raise CacheProblem(f"{MANIFEST} has shapes that disagree with n_train and n_test")
        if manifest["kind"] not in ("real", "synthetic") or not isinstance(manifest["fingerprint"], str):
            raise CacheProblem(f"{MANIFEST} has no valid kind or fingerprint")
    except (KeyError, TypeError, ValueError):
        raise CacheProblem(f"{MANIFEST} is garbled (a field is missing or has the wrong type)") from None
    return manifest


def _build(data_dir: Path, folder: Path, kind: str, digests: dict) -> bool:
    """Decode into a temp folder beside `folder`, then rename it into place; False when another
    grader's rename came first (the caller checks theirs)."""
    x_train, y_train, x_test, y_test, info = fmnist.load_arrays(data_dir, download=False)
    if info.sha256 != digests:
        raise CacheProblem(f"the files in {data_dir} changed while the cache was being built")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        files = {name: _write_array(tmp / _file_name(name), name, a) for name, a in arrays.items()}
        manifest = {
            "format": FORMAT, "kind": kind, "n_train": info.n_train, "n_test": info.n_test, "dir": info.dir,
            "gzip_sha256": digests, "fingerprint": fmnist.fingerprint(x_train, y_train, x_test, y_test),
            "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_file(tmp / MANIFEST, [json.dumps(manifest, indent=1, sort_keys=True).encode()])
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.lexists(folder):
                raise
            return False
        _fsync_dir(folder.parent)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def decoded_chunks(name: str, a: np.ndarray):
    """The cache file's bytes for one IDX array, in chunks: pixels as get_data divides them, labels int64."""
    if name.startswith("x_"):
        table = np.arange(256, dtype=np.float32) / np.float32(255.0)
        for i in range(0, len(a), CHUNK_ROWS):
            yield table[a[i:i + CHUNK_ROWS]].astype(ARRAYS[name], copy=False).tobytes()
    else:
        yield a.astype(ARRAYS[name]).tobytes()


def _write_array(path: Path, name: str, a: np.ndarray) -> dict:
    h = hashlib.sha256()

    def hashed():
        for chunk in decoded_chunks(name, a):
            h.update(chunk)
            yield chunk

    size = _write_file(path, hashed())
    shape = [int(n) for n in a.shape]
    return {"file": path.name, "dtype": ARRAYS[name], "shape": shape, "size": size, "sha256": h.hexdigest()}


def _write_file(path: Path, chunks) -> int:
    size = 0
    with open(path, "xb") as f:
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)
    return size


def _discard(folder: Path) -> None:
    """Out of the way at once (a rename), then removed; another grader may have removed it first."""
    trash = folder.with_name(f".{folder.name}.damaged-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    if trash.is_symlink() or not trash.is_dir():
        trash.unlink()
    else:
        shutil.rmtree(trash, ignore_errors=True)


def _sweep(root: Path) -> None:
    """Leftovers of graders killed while building (a day old) and damaged folders not yet removed."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    now = time.time()
    for p in entries:
        try:
            old = p.name.endswith(".tmp") and now - p.lstat().st_mtime > STALE_S
        except OSError:
            continue
        if p.name.startswith(".") and (old or ".damaged-" in p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gzip_digests(data_dir: Path) -> dict:
    return {name: fmnist.file_sha256(path) for name, path in fmnist.ensure_files(data_dir, download=False).items()}


def _key(kind: str, digests: dict) -> str:
    text = json.dumps([FORMAT, kind, sorted(digests.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _file_name(name: str) -> str:
    return f"{name}.{ARRAYS[name][1:]}"


def _regular_size(path: Path) -> int:
    """Its size; a CacheProblem unless it is a regular file every uid can read (the sandbox's is another)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise CacheProblem(f"{path.name} is missing") from None
    except OSError as e:
        raise CacheProblem(f"{path.name} cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CacheProblem(f"{path.name} is not a regular file")
    if not st.st_mode & stat.S_IROTH:
        raise CacheProblem(f"{path.name} is not world-readable")
    return st.st_size


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    except OSError as e:
        raise CacheProblem(f"{path.name} cannot be read ({e.strerror or e})") from None
    return h.hexdigest()


# the kit's side: map without hashing -------------------------------------------------------------

def open_mapped(folder: str | os.PathLike) -> tuple[dict, dict] | None:
    """({name: copy-on-write memmap}, manifest), or None when anything looks wrong (the kit then decodes
    the gzip files). Sizes are checked, contents are not: the grader verified them when it bound the folder."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
        arrays = {}
        for name, entry in manifest["files"].items():
            path = folder / entry["file"]
            if path.stat().st_size != entry["size"]:
                return None
            arrays[name] = np.memmap(path, dtype=entry["dtype"], mode="c", shape=tuple(entry["shape"]))
        return arrays, manifest
    except (CacheProblem, OSError, ValueError):
        return None
