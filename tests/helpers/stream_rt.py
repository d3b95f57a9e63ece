"""stream_rt.py: the Python half of the C <-> Python stream cross-check (tests/bats/python.bats).

    stream_rt.py write OUT                      the test stream, written by fine_stream
    stream_rt.py check [-n COPIES] IN [TOOL...] verifies IN bit-exactly (as stream_rt check)
    stream_rt.py filter IN OUT                  a pass-through filter (tool "rt-filter")
    stream_rt.py truncations IN                 every cut of IN short of its full length
                                                must raise StreamError
    stream_rt.py corruptions IN                 every byte of IN inverted must raise
                                                StreamError; bits 0, 4 and 7 of every byte
                                                flipped must raise or leave the records as
                                                they were
    stream_rt.py write-raw OUT VERSION CHECKSUM a small stream (one record) written with
                                                msgpack and zstandard alone, declaring
                                                VERSION ("2.0"), frame checksums on or off
                                                (CHECKSUM 1 or 0)
    stream_rt.py write-bad DIR                  writes each malformed stream of BAD_STREAMS
                                                as DIR/KIND.fst, checks that fine_stream
                                                refuses it, naming the file
    stream_rt.py reframe IN OUT SIZE            IN's records re-cut into frames of SIZE
                                                decompressed bytes each, without content
                                                size (records span frames, frames hold
                                                several records: valid, if unusual)
    stream_rt.py boundaries IN                  prints the offset where each frame of IN
                                                ends, but the last
    stream_rt.py frames IN                      IN is as a conforming writer makes it: one
                                                record per zstd frame, each with content
                                                size and checksum

The test stream and its data pattern are defined in tests/helpers/stream_rt.c; this file
builds the same records from the same formula.
"""

import io
import math
import os
import struct
import sys

import msgpack
import numpy as np
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "formats", "python"))
import fine_stream  # noqa: E402

VOL_DTYPES = ["u8", "i8", "i16", "u16", "i32", "i64", "f16", "f32", "f64"]
CASE = "\u00c4BD_001 \u2713"
TAGS = ["a", "", "\u00fcn\u00ef"]
PI_BITS = 0x400921FB54442D18
M64 = (1 << 64) - 1
NREC = 14


def specials(name):
    """The special bit patterns of a dtype (see stream_rt.c)."""
    w = fine_stream.DTYPES[name].itemsize * 8
    sign = 1 << (w - 1)
    if name[0] in "ui":
        return [0, 1, (1 << w) - 1, sign, sign - 1, 2]
    m = {"f16": 10, "f32": 23, "f64": 52}[name]
    ebits = w - 1 - m
    inf = ((1 << ebits) - 1) << m
    one = ((1 << (ebits - 1)) - 1) << m
    return [0, sign, inf, sign | inf, inf | (1 << (m - 1)), sign | inf | 1, 1, (1 << m) - 1,
            sign | 1, 1 << m, inf - 1, sign | (inf - 1), one, sign | one]


def pattern(name, k, shape):
    """Pattern k as a numpy array of dtype name and the given shape."""
    dtype = fine_stream.DTYPES[name]
    w = dtype.itemsize * 8
    n = math.prod(shape)
    sp = specials(name)
    bits = [sp[i] if i < len(sp) else
            (((i + 1) * 0x9E3779B97F4A7C15 + k * 0xD1B54A32D192ED03) & M64) >> (64 - w)
            for i in range(n)]
    return np.array(bits, dtype=f"<u{dtype.itemsize}").view(dtype).reshape(shape)


def records():
    """The test stream's records, as fine_stream.write takes them."""
    for k, name in enumerate(VOL_DTYPES):
        yield {"type": "volume", "case": "RT_001", "name": name, "index": k,
               "array": pattern(name, k, (3, 4, 5))}
    yield {"type": "param", "name": "scalar",
           "array": np.array([PI_BITS], dtype="<u8").view("<f8").reshape(())}
    yield {"type": "param", "name": "empty", "array": np.zeros((0, 4), dtype="<i2")}
    yield {"type": "patch", "case": CASE, "name": "image",
           "array": pattern("f32", 20, (1, 2, 3, 4)),
           "origin": [-1, 0, 2], "pos": [0.5, -1.25, 3.0], "volume_size": [10, 20, 30], "index": 7,
           "label": pattern("i16", 21, (2, 3, 4)),
           "meta": {"source": "stream_rt", "tags": list(TAGS), "scale": 0.1, "tiny": 5e-324,
                    "huge": 1e300, "negzero": -0.0, "inf": math.inf, "nan": math.nan,
                    "imin": -2**63, "imax": 2**63 - 1, "flag": True, "off": False,
                    "deep": {"level": 2, "more": {"x": -3}}}}
    yield {"type": "case_end", "case": CASE, "patches": 1}
    yield {"type": "x-unknown", "note": "pass me through", "n": 42}


# ------------------------------------------------------------------------------------- check

class Mismatch(Exception):
    pass


def same(got, want, where):
    """Deep, exact comparison: arrays by dtype, shape and bytes; floats bit-exactly; ints and
    floats are told apart (an int written as 3.0 is a mismatch)."""
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray):
            raise Mismatch(f"{where}: a {type(got).__name__}, expected an array")
        if got.dtype != want.dtype or got.dtype.str != want.dtype.str:
            raise Mismatch(f"{where}: dtype {got.dtype.str}, expected {want.dtype.str}")
        if got.shape != want.shape:
            raise Mismatch(f"{where}: shape {got.shape}, expected {want.shape}")
        if got.tobytes() != want.tobytes():
            g = np.frombuffer(got.tobytes(), dtype=f"<u{got.dtype.itemsize}")
            w = np.frombuffer(want.tobytes(), dtype=f"<u{want.dtype.itemsize}")
            i = int(np.flatnonzero(g != w)[0])
            raise Mismatch(f"{where}: element {i} has bits {int(g[i]):#x}, expected {int(w[i]):#x}")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            raise Mismatch(f"{where}: a {type(got).__name__}, expected a map")
        if set(got) != set(want):
            raise Mismatch(f"{where}: keys {sorted(got)}, expected {sorted(want)}")
        for key in want:
            same(got[key], want[key], f"{where}.{key}")
        return
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            raise Mismatch(f"{where}: {got!r}, expected {want!r}")
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{where}[{i}]")
        return
    if type(got) is not type(want):
        raise Mismatch(f"{where}: {got!r} ({type(got).__name__}), expected {want!r} "
                       f"({type(want).__name__})")
    if isinstance(want, float) and math.isnan(want):
        ok = math.isnan(got)
    elif isinstance(want, float):
        ok = struct.pack("<d", got) == struct.pack("<d", want)  # tells -0.0 from 0.0
    else:
        ok = got == want
    if not ok:
        raise Mismatch(f"{where}: {got!r}, expected {want!r}")


def check_values(rec):
    """The specials mean what they should once numpy reads them (byte order, signedness)."""
    a = rec["array"].reshape(-1)
    name = rec["name"]
    if name[0] == "i":
        info = np.iinfo(a.dtype)
        want = [0, 1, -1, info.min, info.max, 2]
        got = [int(v) for v in a[:6]]
    elif name[0] == "u":
        info = np.iinfo(a.dtype)
        want = [0, 1, info.max, 2**(info.bits - 1), 2**(info.bits - 1) - 1, 2]
        got = [int(v) for v in a[:6]]
    else:
        info = np.finfo(a.dtype)
        want = [0.0, -0.0, math.inf, -math.inf, "nan", "nan", float(info.smallest_subnormal),
                float(info.tiny - info.smallest_subnormal), -float(info.smallest_subnormal),
                float(info.tiny), float(info.max), -float(info.max), 1.0, -1.0]
        got = ["nan" if math.isnan(v) else float(v) for v in a[:14]]
        if math.copysign(1, float(a[1])) != -1:
            raise Mismatch(f"volume {name}: element 1 is not -0.0")
    if got != want:
        raise Mismatch(f"volume {name}: special values {got}, expected {want}")


def check(path, copies=1, tools=()):
    """Verifies the stream in path; a file is read twice, the second time one byte at a time
    (frames and records then span many reads)."""
    n = check_once(path, copies, tools)
    if path != "-":
        check_once(path, copies, tools, chunk_size=1)
    print(f"stream_rt.py: {path}: {n} records verified")


def check_once(path, copies, tools, chunk_size=1 << 20):
    reader = fine_stream.Reader(path, chunk_size=chunk_size)
    with reader:
        if reader.version[0] != 1:
            raise Mismatch(f"version {reader.version}")
        prov = reader.provenance
        for i, entry in enumerate(prov):
            args = entry.get("args")
            if (not isinstance(entry.get("tool"), str) or not isinstance(entry.get("version"), str)
                    or not isinstance(args, list) or not all(isinstance(a, str) for a in args)
                    or not isinstance(entry.get("time"), str) or len(entry["time"]) != 20):
                raise Mismatch(f"provenance entry {i} is incomplete: {entry!r}")
        names = [p.get("tool") for p in prov]
        if not prov or (tools and names != list(tools)):
            raise Mismatch(f"provenance tools {names}, expected {list(tools)}")
        want = list(records()) * copies
        n = 0
        for rec in reader:
            if n == len(want):
                raise Mismatch(f"more records than the {len(want)} expected")
            same(rec, want[n], f"record {n + 1} ({want[n]['type']})")
            if rec["type"] == "volume":
                check_values(rec)
            n += 1
        if n != len(want):
            raise Mismatch(f"the input ends after {n} records, expected {len(want)}")
    return n


def truncations(path):
    data = open(path, "rb").read()
    for cut in range(len(data)):
        try:
            for _ in fine_stream.read(io.BytesIO(data[:cut])):
                pass
        except fine_stream.StreamError:
            continue
        raise Mismatch(f"a cut at byte {cut} of {len(data)} was not detected")
    n = sum(1 for _ in fine_stream.read(io.BytesIO(data)))
    print(f"stream_rt.py: {path}: all {len(data)} truncations detected; whole: {n} records")


def corruptions(path):
    data = open(path, "rb").read()
    want = list(records())
    benign = 0
    for i in range(len(data)):
        for mask in (0xFF, 0x01, 0x10, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            try:
                got = list(fine_stream.read(io.BytesIO(bytes(bad))))
            except fine_stream.StreamError:
                continue
            if mask == 0xFF:
                raise Mismatch(f"inverting byte {i} of {len(data)} was not detected")
            if len(got) != len(want):
                raise Mismatch(f"flipping bit {mask:#x} of byte {i}: {len(got)} records")
            for n, (g, w) in enumerate(zip(got, want)):
                same(g, w, f"flipping bit {mask:#x} of byte {i}: record {n + 1}")
            benign += 1
    print(f"stream_rt.py: {path}: every corruption of its {len(data)} bytes detected "
          f"({benign} single-bit flips do not change the records)")


def raw_stream(version="1.0"):
    """A one-record stream as a list of msgpack objects."""
    prov = [{"tool": "write-raw", "version": "0", "args": [], "time": "2024-01-01T00:00:00Z"}]
    return [{"type": "header", "format": "fine-stream",
             "version": [int(v) for v in version.split(".")], "provenance": prov},
            {"type": "x-unknown", "n": 1},
            {"type": "end", "records": 1}]


# Malformed streams every reader must refuse (write-bad KIND).
BAD_STREAMS = {
    "end-count": lambda s: s[:2] + [{"type": "end", "records": 2}],
    "end-count-zero": lambda s: s[:2] + [{"type": "end", "records": 0}],
    "end-without-count": lambda s: s[:2] + [{"type": "end"}],
    "header-before-end": lambda s: s[:2] + s,
    "record-after-end": lambda s: s + [{"type": "x-unknown", "n": 2}],
    "first-not-header": lambda s: s[1:],
    "not-fine-stream": lambda s: [dict(s[0], format="other")] + s[1:],
    "record-not-map": lambda s: s[:1] + [[1, 2]] + s[1:],
    "record-without-type": lambda s: s[:1] + [{"n": 3}] + s[1:],
    "tensor-data-short": lambda s: s[:1] + [{"type": "param", "name": "p", "dtype": "f32",
                                             "shape": [2], "data": b"1234"}] + s[2:],
    "tensor-dtype-unknown": lambda s: s[:1] + [{"type": "param", "name": "p", "dtype": "u32",
                                                "shape": [1], "data": b"1234"}] + s[2:],
    "nested-tensor-data-long": lambda s: s[:1] + [{"type": "patch", "label": {
        "dtype": "u8", "shape": [2], "data": b"123"}}] + s[2:],
}


def write_raw(path, version, checksum, objects=None):
    """A stream from msgpack and zstandard directly (for what fine_stream refuses to write:
    another version, no checksums, malformed streams)."""
    zstd = zstandard.ZstdCompressor(write_checksum=checksum, write_content_size=True)
    with open(path, "wb") as f:
        for obj in objects or raw_stream(version):
            f.write(zstd.compress(msgpack.packb(obj, use_bin_type=True)))


def write_bad(directory):
    for kind, make in BAD_STREAMS.items():
        path = os.path.join(directory, kind + ".fst")
        write_raw(path, "1.0", True, make(raw_stream()))
        try:
            for _ in fine_stream.read(path):
                pass
        except fine_stream.StreamError as ex:
            if not str(ex).startswith(path + ": "):
                raise Mismatch(f"{kind}: the message does not name the file: {ex}")
            print(f"{kind}: {ex}")
            continue
        raise Mismatch(f"{kind}: fine_stream read the stream without an error")


def reframe(src, dst, size):
    data = open(src, "rb").read()
    content = b""
    while data:
        dec = zstandard.ZstdDecompressor().decompressobj()
        content += dec.decompress(data)
        data = dec.unused_data
    zstd = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    with open(dst, "wb") as f:
        for at in range(0, len(content), size):
            cobj = zstd.compressobj()  # streaming: no content size in the frame header
            f.write(cobj.compress(content[at:at + size]) + cobj.flush())


def boundaries(path):
    data = open(path, "rb").read()
    at = 0
    while True:
        dec = zstandard.ZstdDecompressor().decompressobj()
        dec.decompress(data[at:])
        at = len(data) - len(dec.unused_data)
        if at == len(data):
            break
        print(at)


def frames(path):
    """Splits IN into its zstd frames with zstandard alone (not fine_stream)."""
    data = open(path, "rb").read()
    n = 0
    while data:
        params = zstandard.get_frame_parameters(data)
        if not params.has_checksum or params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise Mismatch(f"frame {n}: checksum {params.has_checksum}, "
                           f"content size {params.content_size}")
        dec = zstandard.ZstdDecompressor().decompressobj()
        content = dec.decompress(data)
        if not dec.eof or len(content) != params.content_size:
            raise Mismatch(f"frame {n}: incomplete or of the wrong size")
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
        unpacker.feed(content)
        if len(list(unpacker)) != 1 or unpacker.tell() != len(content):
            raise Mismatch(f"frame {n} does not hold exactly one record")
        data = dec.unused_data
        n += 1
    print(f"stream_rt.py: {path}: {n} frames, one record each, with content size and checksum")


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "write":
            fine_stream.write(argv[2], records(), tool="stream_rt.py", args=argv)
            return 0
        if len(argv) >= 3 and argv[1] == "check":
            copies, rest = (int(argv[3]), argv[4:]) if argv[2] == "-n" else (1, argv[2:])
            check(rest[0], copies, rest[1:])
            return 0
        if len(argv) == 4 and argv[1] == "filter":
            with fine_stream.Reader(argv[2]) as reader, \
                    fine_stream.Writer(argv[3], tool="rt-filter", args=argv, upstream=reader) as w:
                for rec in reader:
                    w.put(rec)
            return 0
        if len(argv) == 3 and argv[1] == "corruptions":
            corruptions(argv[2])
            return 0
        if len(argv) == 5 and argv[1] == "write-raw":
            write_raw(argv[2], argv[3], argv[4] == "1")
            return 0
        if len(argv) == 5 and argv[1] == "reframe":
            reframe(argv[2], argv[3], int(argv[4]))
            return 0
        if len(argv) == 3 and argv[1] == "write-bad":
            write_bad(argv[2])
            return 0
        if len(argv) == 3 and argv[1] == "boundaries":
            boundaries(argv[2])
            return 0
        if len(argv) == 3 and argv[1] == "frames":
            frames(argv[2])
            return 0
        if len(argv) == 3 and argv[1] == "truncations":
            truncations(argv[2])
            return 0
    except (Mismatch, fine_stream.StreamError, zstandard.ZstdError) as ex:
        print(f"stream_rt.py: {ex}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
