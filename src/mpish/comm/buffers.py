"""mpi4py buffer arguments (``buf``, ``[buf, dtype]``, ``[buf, count, dtype]``) as flat byte views.

Only host memory that Python's buffer protocol exposes C-contiguously is supported
(bytes, bytearray, array.array, numpy arrays, memoryview); anything else (GPU or DLPack
buffers, derived datatypes) raises :class:`Unsupported` with a one-line reason.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

_FORMAT_PREFIX = "@=<>!"


class Unsupported(NotImplementedError, AttributeError):
    """An mpi4py feature mpish.secure does not offer (both NotImplementedError and
    AttributeError, so ``hasattr(comm, name)`` and ``getattr(comm, name, default)`` work)."""


def _plain_buffer_types() -> frozenset[type]:
    """Types whose objects are always a whole buffer (never a list spec, IN_PLACE or BOTTOM)."""
    types: set[type] = {bytes, bytearray, memoryview}
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    else:
        types.add(numpy.ndarray)
    return frozenset(types)


_PLAIN_BUFFERS = _plain_buffer_types()
_EMPTY = memoryview(b"")


def mpi_error(error_class: int, message: str) -> Exception:
    """MPI's own exception of ``error_class`` (as mpi4py raises it), with a readable message."""
    exc: Exception = MPI.Exception(error_class)
    exc.args = (*exc.args, message)
    return exc


def mpi_truncate(message: str) -> Exception:
    """MPI's own truncation error, as mpi4py raises it for a too-small receive buffer."""
    return mpi_error(MPI.ERR_TRUNCATE, message)


def datatype_of(datatype: Any) -> Any:
    if isinstance(datatype, str):
        return MPI._typedict[datatype.lstrip(_FORMAT_PREFIX)]
    return datatype


def parse(buf: Any, *, writable: bool) -> tuple[memoryview, int | None, int]:
    """(flat bytes of the whole buffer, count or None, datatype size) of a buffer argument."""
    count: int | None = None
    datatype: Any = None
    if isinstance(buf, (list, tuple)):
        if len(buf) == 2:
            buf, datatype = buf
            if isinstance(datatype, int) and not isinstance(datatype, bool):
                count, datatype = datatype, None
        elif len(buf) == 3:
            buf, count, datatype = buf
        elif len(buf) == 4:  # [buf, (count, displ), dtype] forms are v-collective specs
            raise Unsupported("mpish.secure: this buffer specification is only valid in v-collectives")
        else:
            raise Unsupported("mpish.secure supports buffers as buf, [buf, dtype] or [buf, count, dtype]")
    if buf is MPI.IN_PLACE or buf is MPI.BOTTOM:
        raise Unsupported("mpish.secure does not support MPI.IN_PLACE / MPI.BOTTOM here")
    if buf is None:
        if count not in (None, 0):
            raise ValueError("a None buffer must have count 0")
        return (memoryview(bytearray()) if writable else _EMPTY), 0, 1
    try:
        view = memoryview(buf)
    except TypeError:
        view = _host_view(buf)
    if not view.c_contiguous:
        raise Unsupported("mpish.secure needs C-contiguous buffers")
    if writable and view.readonly:
        raise ValueError("the receive buffer is read-only")
    flat = view.cast("B") if (view.format != "B" or view.ndim != 1) else view
    size = view.itemsize
    if datatype is not None:
        datatype = datatype_of(datatype)
        size = datatype.Get_size()
        _, extent = datatype.Get_extent()
        if extent != size:
            raise Unsupported("mpish.secure supports contiguous basic datatypes only")
    return flat, count, size


def _host_view(buf: Any) -> memoryview:
    """Bytes of a buffer without the buffer protocol (DLPack, CUDA array interface) in host memory."""
    try:
        return memoryview(MPI.buffer(buf))  # type: ignore[arg-type]  # the stub lacks __buffer__
    except Exception:
        raise Unsupported(
            f"mpish.secure supports host-memory buffers only, not {type(buf).__name__}"
        ) from None


def byte_view(buf: Any, *, writable: bool) -> memoryview:
    """A flat byte view of an mpi4py buffer argument (the count, when given, is the total)."""
    kind: type = buf.__class__
    if kind in _PLAIN_BUFFERS:  # the hot path: bytes, bytearray, memoryview, numpy array
        view = memoryview(buf)
        if view.c_contiguous and not (writable and view.readonly):
            return view if view.ndim == 1 and view.format == "B" else view.cast("B")
    flat, count, size = parse(buf, writable=writable)
    if count is not None:
        if count * size > len(flat):
            raise ValueError("buffer count exceeds the buffer size")
        flat = flat[: count * size]
    return flat


def block_view(buf: Any, blocks: int, *, writable: bool) -> tuple[memoryview, int]:
    """(view, bytes per block) of a buffer of ``blocks`` equal blocks (Gather, Scatter, Alltoall...).

    In ``[buf, count, dtype]`` the count is per process, as in mpi4py.
    """
    flat, count, size = parse(buf, writable=writable)
    if count is None:
        block = len(flat) // blocks if blocks else 0
    else:
        block = count * size
        if block * blocks > len(flat):
            raise ValueError("buffer count exceeds the buffer size")
    return flat[: block * blocks], block


def typed_spec(buf: Any, storage: Any, nbytes: int) -> list[Any]:
    """``[storage, count, datatype]`` with the datatype of buffer argument ``buf`` (for Reduce_local)."""
    datatype: Any
    if isinstance(buf, (list, tuple)):
        datatype = datatype_of(buf[-1])
    else:
        fmt = memoryview(buf).format.lstrip(_FORMAT_PREFIX)
        datatype = MPI._typedict.get(fmt)
        if datatype is None:
            raise Unsupported(f"mpish.secure cannot reduce buffers of format {fmt!r}")
    size = datatype.Get_size()
    return [storage, nbytes // size, datatype]


def set_status(status: Any, source: int, tag: int, nbytes: int) -> None:
    if status is not None:
        status.Set_source(source)
        status.Set_tag(tag)
        status.Set_error(MPI.SUCCESS)
        status.Set_elements(MPI.BYTE, nbytes)


def matches(want_source: int, want_tag: int, source: int, tag: int) -> bool:
    return (want_source == MPI.ANY_SOURCE or want_source == source) and (
        want_tag == MPI.ANY_TAG or want_tag == tag
    )


def vector_view(buf: Any, size: int, *, writable: bool) -> tuple[memoryview, list[int], list[int]]:
    """(flat bytes, counts in bytes, displacements in bytes) of a v-collective buffer argument.

    Accepts mpi4py's forms: ``buf``, ``[buf, counts]``, ``[buf, (counts, displs)]``,
    ``[buf, dtype]``, ``[buf, counts, dtype]``, ``[buf, (counts, displs), dtype]`` and
    ``[buf, counts, displs, dtype]``; displacements default to the packed layout.
    """
    counts: Any = None
    displs: Any = None
    datatype: Any = None
    if isinstance(buf, (list, tuple)):
        parts = list(buf)
        buf = parts[0]
        rest = parts[1:]
        if rest and isinstance(rest[-1], (MPI.Datatype, str)):
            datatype = rest.pop()
        if len(rest) == 2:
            counts, displs = rest
        elif len(rest) == 1:
            spec = rest[0]
            if isinstance(spec, tuple) and len(spec) == 2:
                counts, displs = spec
            else:
                counts = spec
        elif rest:
            raise Unsupported("mpish.secure: unsupported v-collective buffer specification")
    if buf is MPI.IN_PLACE or buf is MPI.BOTTOM:
        raise Unsupported("mpish.secure does not support MPI.IN_PLACE / MPI.BOTTOM here")
    flat, _, itemsize = parse(buf if datatype is None else [buf, datatype], writable=writable)
    if counts is None:
        per = len(flat) // itemsize // size if size else 0
        counts = [per] * size
    elif isinstance(counts, int):
        counts = [counts] * size
        if displs is None and counts[0]:
            displs = [k * counts[0] for k in range(size)]
    counts = [int(c) for c in counts]
    if displs is None:
        displs, offset = [], 0
        for c in counts:
            displs.append(offset)
            offset += c
    displs = [int(d) for d in displs]
    if len(counts) != size or len(displs) != size:
        raise ValueError(f"v-collective: expected {size} counts and displacements")
    byte_counts = [c * itemsize for c in counts]
    byte_displs = [d * itemsize for d in displs]
    for c, d in zip(byte_counts, byte_displs, strict=True):
        if c < 0 or d < 0 or c + d > len(flat):
            raise ValueError("v-collective: counts and displacements exceed the buffer")
    return flat, byte_counts, byte_displs
