"""fine_stream: read and write fine tensor streams (formats/STREAM.md) from Python.

An independent implementation of the format (the C one is lib/stream.c), needing only numpy,
msgpack and zstandard (Debian: python3-numpy python3-msgpack python3-zstandard).

    import fine_stream
    for rec in fine_stream.read("case.fst"):      # dicts; tensors become numpy arrays
        print(rec["type"], rec.get("name"), rec["array"].shape if "array" in rec else "")

    fine_stream.write("out.fst", records, tool="my-stage", args=sys.argv)

Reading: the header and end records are consumed and checked; every data record comes out as
a dict. A record that is a tensor has its dtype/shape/data replaced by "array" (a little-endian
numpy array of the right dtype and shape); a nested tensor map ({dtype, shape, data}, e.g. a
patch's "label") becomes a numpy array itself. Alignment padding ("_pad_<key>" entries) is
dropped. Anything wrong with the input (not a stream, a newer major version, truncated,
corrupt, a failed checksum, a wrong end count) raises StreamError with a message naming the
file.

Writing reverses this: "array" in a record, or a numpy array as any value, is written as a
tensor. Each record goes in a zstd frame of its own, with content size and checksum, flushed
at once. A path is written to a temporary file in the same directory and renamed into place
when complete; "-" is stdout.

Run as a script, `python3 fine_stream.py FILE...` lists the records of streams.
"""

import math
import os
import sys
import tempfile
import time

import msgpack
import numpy as np
import zstandard

__all__ = ["StreamError", "Reader", "Writer", "read", "read_header", "write",
           "FORMAT_NAME", "FORMAT_VERSION", "DTYPES"]

__version__ = "0.1.0"

FORMAT_NAME = "fine-stream"
FORMAT_VERSION = (1, 0)

# Wire name -> numpy dtype (always little-endian).
DTYPES = {
    "u8": np.dtype("u1"),
    "i8": np.dtype("i1"),
    "i16": np.dtype("<i2"),
    "u16": np.dtype("<u2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "f16": np.dtype("<f2"),
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
}
# (numpy kind, item size) -> wire name, for writing arrays of any byte order.
_WIRE_NAMES = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHECKSUM_FLAG = 0x04  # bit 2 of the frame header descriptor
_CHUNK = 1 << 20       # bytes read from the input at a time
_TENSOR_KEYS = ("dtype", "shape", "data")


class StreamError(Exception):
    """The input is not a valid fine stream (the message names the file)."""


# ------------------------------------------------------------------------------------- reading

class Reader:
    """Reads a fine stream: a path, "-" for stdin, or a binary file object.

    Opening reads the first header (header, provenance, version are then set); iterating
    gives the data records, decoded as described in the module docstring. Memory: one zstd
    frame (one record, for conforming writers) at a time.
    """

    def __init__(self, source, chunk_size=_CHUNK):
        self._owned = None
        if isinstance(source, (str, bytes, os.PathLike)) and os.fsdecode(source) == "-":
            self.name = "stdin"
            self._file = sys.stdin.buffer
            if self._file.isatty():
                raise StreamError("stdin is a terminal; give an input file or pipe a stream in")
        elif isinstance(source, (str, bytes, os.PathLike)):
            self.name = os.fsdecode(source)
            try:
                self._file = self._owned = open(source, "rb")
            except OSError as ex:
                raise StreamError(f"{self.name}: {ex.strerror}") from None
        else:
            self.name = getattr(source, "name", None)
            if not isinstance(self.name, str):
                self.name = "<stream>"
            self._file = source
        self._read = getattr(self._file, "read1", self._file.read)
        self._chunk = chunk_size
        self._buf = b""        # compressed bytes read but not yet given to a decompressor
        self._pos = 0          # input offset of _buf[0]
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
        self._fed = 0          # decompressed bytes given to the unpacker
        self._in_stream = False
        self._count = 0        # data records since the current header
        self.header = None
        try:
            first = self._next_object()
            if first is None:
                raise self._error("empty input, not a fine stream")
            if not isinstance(first, dict) or first.get("type") != "header":
                raise self._error("not a fine stream (the first record is not a header)")
            self._start_stream(first)
        except BaseException:
            self.close()
            raise
        self.header = first

    @property
    def provenance(self):
        """The provenance list of the first header, oldest stage first."""
        return self.header.get("provenance", [])

    @property
    def version(self):
        """The first header's format version as a (major, minor) tuple."""
        return tuple(self.header["version"])

    def close(self):
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            rec = self._next_object()
            if rec is None:
                if self._in_stream:
                    raise self._error(f"truncated: the stream stops before its end record "
                                      f"(after {self._count} records)")
                raise StopIteration
            if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
                raise self._error(f"record {self._count + 1} is not a map with a 'type' string")
            kind = rec["type"]
            if not self._in_stream:
                if kind != "header":
                    raise self._error(f"a '{kind}' record after an end record "
                                      f"(only a new header may follow)")
                self._start_stream(rec)
                continue
            if kind == "header":
                raise self._error(f"truncated: a new header before the end record "
                                  f"(after {self._count} records)")
            if kind == "end":
                n = rec.get("records")
                if not isinstance(n, int) or isinstance(n, bool):
                    raise self._error("corrupt stream: the end record has no record count")
                if n != self._count:
                    raise self._error(f"truncated: the end record counts {n} records, "
                                      f"the stream has {self._count}")
                self._in_stream = False
                continue
            self._count += 1
            try:
                return _decode(rec)
            except ValueError as ex:
                raise self._error(f"record {self._count} ('{kind}'): {ex}") from None

    # -- stream structure

    def _start_stream(self, header):
        if header.get("format") != FORMAT_NAME:
            raise self._error(f"not a fine stream (header format {header.get('format')!r})")
        version = header.get("version")
        if (not isinstance(version, list) or len(version) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in version)):
            raise self._error(f"bad header version {version!r} (expected [major, minor])")
        major, minor = version
        if major > FORMAT_VERSION[0]:
            raise self._error(f"written by a newer fine, version {major}.{minor}; "
                              f"this reader knows {FORMAT_VERSION[0]}.x")
        if major < FORMAT_VERSION[0]:
            raise self._error(f"unknown format version {major}.{minor}; "
                              f"this reader knows {FORMAT_VERSION[0]}.x")
        if not isinstance(header.get("provenance", []), list):
            raise self._error("bad header: 'provenance' is not an array")
        self._in_stream = True
        self._count = 0

    # -- msgpack objects out of whole frames

    def _next_object(self):
        """The next msgpack object, or None at the end of the input."""
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            except Exception as ex:  # msgpack's FormatError, StackError, ValueError, ...
                raise self._error(f"corrupt record data: {ex}") from None
            if not self._read_frame():
                if self._unpacker.tell() != self._fed:
                    raise self._error("truncated: the input ends inside a record")
                return None

    def _fill(self, n):
        """Reads until _buf holds n bytes; False when the input ends first."""
        while len(self._buf) < n:
            chunk = self._read(self._chunk)
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _read_frame(self):
        """Decompresses one whole zstd frame into the unpacker; False at the end of input."""
        start = self._pos
        if not self._fill(5):
            if not self._buf:
                return False
            raise self._error(f"truncated: the input ends inside a zstd frame header "
                              f"(byte {start})")
        if self._buf[:4] != _ZSTD_MAGIC:
            raise self._error(f"not a fine stream: no zstd frame at byte {start}")
        if not self._buf[4] & _CHECKSUM_FLAG:
            raise self._error(f"the zstd frame at byte {start} has no content checksum "
                              f"(fine streams require one)")
        dec = zstandard.ZstdDecompressor().decompressobj()
        while True:
            data = self._buf or self._read(self._chunk)
            self._buf = b""
            if not data:
                raise self._error(f"truncated: the input ends inside the zstd frame "
                                  f"at byte {start}")
            self._pos += len(data)
            try:
                out = dec.decompress(data)
            except zstandard.ZstdError as ex:
                raise self._error(f"corrupt zstd frame at byte {start}: {ex}") from None
            if out:
                self._unpacker.feed(out)
                self._fed += len(out)
            if dec.eof:
                self._buf = dec.unused_data
                self._pos -= len(self._buf)
                return True

    def _error(self, msg):
        return StreamError(f"{self.name}: {msg}")


def _tensor_to_array(m):
    """The numpy array of a {dtype, shape, data} map; ValueError when malformed."""
    dtype = DTYPES.get(m["dtype"]) if isinstance(m["dtype"], str) else None
    if dtype is None:
        raise ValueError(f"unknown dtype {m['dtype']!r}")
    shape = m["shape"]
    if (not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ValueError(f"bad shape {shape!r}")
    data = m["data"]
    need = math.prod(shape) * dtype.itemsize
    if not isinstance(data, bytes) or len(data) != need:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else f"a {type(data).__name__}"
        raise ValueError(f"data is {got}, shape {shape} of {m['dtype']} needs {need} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _is_pad(key):
    """A "_pad_<key>" entry: padding a writer put before a bin to align its data in the record;
    meaningless once decoded (and wrong anywhere else), so dropped."""
    return isinstance(key, str) and key.startswith("_pad_")


def _decode(value, where=""):
    """Tensor maps to numpy arrays, recursively (see the module docstring). where: the key
    path of value in its record ("" for the record itself)."""
    if isinstance(value, dict):
        if any(_is_pad(k) for k in value):
            value = {k: v for k, v in value.items() if not _is_pad(k)}
        if all(k in value for k in _TENSOR_KEYS):
            try:
                array = _tensor_to_array(value)
            except ValueError as ex:
                raise ValueError(f"tensor '{where}': {ex}" if where else str(ex)) from None
            if where and len(value) == 3:
                return array
            out = {}
            for k, v in value.items():
                if k == "dtype":
                    out["array"] = array
                elif k not in _TENSOR_KEYS:
                    out[k] = _decode(v, f"{where}.{k}" if where else str(k))
            return out
        return {k: _decode(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def read(source):
    """Yields the data records of the stream(s) in source (path, "-", or binary file object)."""
    with Reader(source) as reader:
        yield from reader


def read_header(source):
    """The first header record of a stream (format, version, provenance)."""
    with Reader(source) as reader:
        return reader.header


# ------------------------------------------------------------------------------------- writing

def _array_to_tensor(array):
    """The {dtype, shape, data} map of a numpy array (data little-endian, C order)."""
    name = _WIRE_NAMES.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise ValueError(f"numpy dtype {array.dtype} has no fine stream dtype "
                         f"({' '.join(DTYPES)})")
    le = np.ascontiguousarray(array, dtype=DTYPES[name])
    return {"dtype": name, "shape": list(array.shape),
            "data": memoryview(le.reshape(-1)).cast("B")}


def _encode(value, top=False):
    """numpy arrays to tensor maps, recursively (the reverse of _decode)."""
    if isinstance(value, np.ndarray):
        return _array_to_tensor(value)
    if isinstance(value, dict):
        out = {"type": value["type"]} if top and "type" in value else {}
        for k, v in value.items():
            if k == "array" and isinstance(v, np.ndarray):
                out.update(_array_to_tensor(v))
            elif k not in out:
                out[k] = _encode(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _pack_default(obj):
    """msgpack fallback: numpy scalars as Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write a {type(obj).__name__} in a fine stream record")


def _upstream_provenance(upstream):
    if upstream is None:
        return []
    if isinstance(upstream, Reader):
        return list(upstream.provenance)
    if isinstance(upstream, dict):  # a header record
        return list(upstream.get("provenance", []))
    return list(upstream)


class Writer:
    """Writes a fine stream to a path, "-" (stdout) or a binary file object.

    The header (with provenance = upstream's + this stage's entry) is written at once;
    put(record) writes a record; close() writes the end record and, for a path, renames the
    temporary file into place. Used as a context manager, an exception abandons the output
    (the temporary file is removed). upstream: a Reader, a header dict or a provenance list.
    """

    def __init__(self, target, tool="python", args=None, upstream=None, tool_version=None,
                 level=1):
        self.count = 0
        self._tmp = None
        self._final = None
        self._closed = False
        if isinstance(target, (str, bytes, os.PathLike)) and os.fsdecode(target) == "-":
            self.name = "stdout"
            self._file = sys.stdout.buffer
            if self._file.isatty():
                raise StreamError("refusing to write a stream to a terminal")
        elif isinstance(target, (str, bytes, os.PathLike)):
            self._final = os.path.abspath(os.fsdecode(target))
            self.name = os.fsdecode(target)
            directory, base = os.path.split(self._final)
            try:
                fd, self._tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
            except OSError as ex:
                raise StreamError(f"{self.name}: {ex.strerror}") from None
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            self._file = os.fdopen(fd, "wb")
        else:
            self.name = getattr(target, "name", "<stream>")
            self._file = target
        self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                              write_content_size=True)
        entry = {
            "tool": tool,
            "version": tool_version if tool_version is not None else __version__,
            "args": [str(a) for a in (args or [])],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.provenance = _upstream_provenance(upstream) + [entry]
        try:
            self._put_raw({"type": "header", "format": FORMAT_NAME,
                           "version": list(FORMAT_VERSION), "provenance": self.provenance})
        except BaseException:
            self.abort()
            raise

    def put(self, record):
        """Writes one record (a dict with a 'type'; see the module docstring) and flushes it."""
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            raise ValueError("a record is a dict with a 'type' string")
        if record["type"] in ("header", "end"):
            raise ValueError(f"'{record['type']}' records are written by the Writer itself")
        self._put_raw(_encode(record, top=True))
        self.count += 1

    def _put_raw(self, record):
        packed = msgpack.packb(record, use_bin_type=True, default=_pack_default)
        self._file.write(self._zstd.compress(packed))
        self._file.flush()

    def close(self):
        """Writes the end record; a path is renamed into place."""
        if self._closed:
            return
        try:
            self._put_raw({"type": "end", "records": self.count})
            if self._tmp is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp, self._final)
                self._tmp = None
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self):
        """Abandons the output: a temporary file is removed."""
        self._closed = True
        if self._tmp is not None:
            self._file.close()
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write(target, records, tool="python", args=None, upstream=None, **kwargs):
    """Writes a whole stream: header, every record of the iterable records, end.
    Returns the number of records. kwargs go to Writer (tool_version, level)."""
    with Writer(target, tool=tool, args=args, upstream=upstream, **kwargs) as writer:
        for rec in records:
            writer.put(rec)
    return writer.count


# ------------------------------------------------------------------------------------- the CLI

def _describe(value):
    return f"{_WIRE_NAMES[(value.dtype.kind, value.dtype.itemsize)]} {list(value.shape)}"


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage: fine_stream.py FILE...  (lists the records of fine streams; - is stdin)")
        return 0 if len(argv) >= 2 else 2
    try:
        for path in argv[1:]:
            with Reader(path) as reader:
                print(f"# {reader.name}: {FORMAT_NAME} {reader.version[0]}.{reader.version[1]}")
                for p in reader.provenance:
                    args = " ".join(p.get("args", []))
                    print(f"# {p.get('time')} {p.get('tool')} {p.get('version')}: {args}")
                for rec in reader:
                    fields = [rec["type"], str(rec.get("name", "-"))]
                    array = rec.get("array")
                    fields.append(_describe(array) if isinstance(array, np.ndarray) else "-")
                    fields += [f"{k}: {_describe(v)}" for k, v in rec.items()
                               if isinstance(v, np.ndarray) and k != "array"]
                    print("\t".join(fields))
    except StreamError as ex:
        print(f"fine_stream.py: {ex}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
