"""mpi4py buffer arguments (``buf``, ``[buf, dtype]``, ``[buf, count, dtype]``) as flat byte views.

Only host memory that Python's buffer protocol exposes C-contiguously is supported
(bytes, bytearray, array.array, numpy arrays, memoryview); anything else (GPU or DLPack
buffers) raises :class:`Unsupported` with a one-line reason. Derived datatypes with gaps
travel packed (packing.py); gap-free ones are read where their data lie.
"""

from __future__ import annotations

import operator
import sys
import warnings
from typing import Any

from mpi4py import MPI

from .packing import _contiguous, derived, item_span, pack, type_name, unpack

_FORMAT_PREFIX = "@=<>!"
# a buffer whose format names the other byte order: mpi4py refuses it where it takes the datatype
# from the format (summing big-endian doubles as native ones gave silent garbage)
_FOREIGN_ORDER = (">", "!") if sys.byteorder == "little" else ("<",)


def native_order(view: memoryview) -> memoryview:
    """``view``, if its format is in this machine's byte order (mpi4py's BufferError if not)."""
    if view.format.startswith(_FOREIGN_ORDER):
        raise BufferError(f"format string {view.format!r} with non-native byte order")
    return view


class Unsupported(NotImplementedError, AttributeError):
    """An mpi4py feature mpish.secure does not offer (both NotImplementedError and
    AttributeError, so ``hasattr(comm, name)`` and ``getattr(comm, name, default)`` work)."""


_PADDED_PAIRS = (MPI.DOUBLE_INT, MPI.LONG_DOUBLE_INT, MPI.LONG_INT, MPI.SHORT_INT)  # MINLOC's, padded


class NotContiguous(Unsupported, BufferError):
    """A strided buffer (mpi4py raises BufferError for one)."""


class ReadOnlyBuffer(BufferError, ValueError):
    """A receive buffer that cannot be written (mpi4py's BufferError; a ValueError as before)."""


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


class MPIError(MPI.Exception):
    """An MPI.Exception of an MPI error class (``Get_error_class``), whose text is MPI's string of
    the class and then mpish's words on what happened (str() showed MPI's string only)."""

    __module__ = "mpish.comm"  # where a program finds it (a traceback names it so)

    def __str__(self) -> str:
        return f"{MPI.Exception.__str__(self)}: {self.args[-1]}"

    def __reduce__(self) -> tuple[Any, tuple[int, str]]:
        return mpi_error, (self.Get_error_class(), self.args[-1])


def mpi_error(error_class: int, message: str) -> Exception:
    """MPI's own exception of ``error_class`` (an MPI.Exception, as mpi4py raises it), whose
    text is MPI's string of the class and ``message``."""
    exc: Exception = MPIError(error_class)
    exc.args = (*exc.args, message)
    return exc


def mpi_truncate(message: str) -> Exception:
    """MPI's own truncation error, as mpi4py raises it for a too-small receive buffer."""
    return mpi_error(MPI.ERR_TRUNCATE, message)


def datatype_of(datatype: Any) -> Any:
    if isinstance(datatype, str):
        return MPI._typedict[datatype.lstrip(_FORMAT_PREFIX)]
    return datatype


def _is_datatype(obj: Any) -> bool:
    return isinstance(obj, (MPI.Datatype, str))


def parse(buf: Any, *, writable: bool, entries: bool = False) -> tuple[memoryview, int | None, int]:
    """(flat bytes of the buffer from its displacement on, count or None, datatype size).

    mpi4py's forms: ``buf``, ``[buf, dtype]``, ``[buf, count]``, ``[buf, count, dtype]``,
    ``[buf, (count, displ), dtype]`` and ``[buf, count, displ, dtype]`` (displ in entries).
    ``entries``: the caller counts entries, so the element size must be known (a DLPack or
    CUDA-interface buffer without a datatype exposes bytes only).
    """
    count: Any = None
    displ: Any = None
    datatype: Any = None
    if isinstance(buf, (list, tuple)):
        if len(buf) == 2:
            buf, count = buf
            if _is_datatype(count):
                count, datatype = None, count
            elif isinstance(count, (list, tuple)):
                count, displ = count
        elif len(buf) == 3:
            buf, count, datatype = buf
            if isinstance(count, (list, tuple)):
                count, displ = count
        elif len(buf) == 4:
            buf, count, displ, datatype = buf
        else:
            raise ValueError("message: expecting 2 to 4 items")
    if buf is MPI.IN_PLACE or buf is MPI.BOTTOM:
        raise Unsupported("mpish.secure does not support MPI.IN_PLACE / MPI.BOTTOM here")
    if buf is None:
        if count not in (None, 0):
            raise ValueError(f"message: buffer is None but count is {count}")
        return (memoryview(bytearray()) if writable else _EMPTY), 0, 1
    try:
        view = memoryview(buf)
        if datatype is None:  # taken from the format, as mpi4py does: in this byte order only
            native_order(view)
    except TypeError:
        view, fmt = _host_view(buf)
        if datatype is None and fmt is not None:
            datatype = fmt
        elif datatype is None and (count is not None or displ is not None or entries):
            raise Unsupported(
                f"mpish.secure: give the datatype of a {type(buf).__name__} buffer "
                "([buf, count, MPI.INT]): its element size is not known here"
            ) from None
    if not view.c_contiguous and view.f_contiguous and hasattr(buf, "T"):
        transposed = memoryview(buf.T)  # a Fortran-ordered array: its transpose is C-ordered
        if transposed.c_contiguous and MPI.Get_address(transposed) == MPI.Get_address(view):
            view = transposed  # the same memory (never a copy a receive would land in)
    if not view.c_contiguous:
        raise NotContiguous(
            "mpish.secure needs contiguous buffers, not a strided view (copy it with "
            "numpy.ascontiguousarray, or describe it with a derived datatype in Send/Recv/Sendrecv)"
        )
    if writable and view.readonly:
        raise ReadOnlyBuffer("the receive buffer is read-only")
    flat = view.cast("B") if (view.format != "B" or view.ndim != 1) else view
    size = view.itemsize
    if datatype is not None:
        datatype = datatype_of(datatype)
        size = datatype.Get_size()
        _, extent = datatype.Get_extent()
        if extent != size or not _contiguous(datatype):
            if datatype in _PADDED_PAIRS:
                raise Unsupported(
                    f"mpish.secure cannot take {type_name(datatype)}, a pair type with padding: use MPI.2INT "
                    "or MPI.FLOAT_INT, or the object form, comm.allreduce((value, rank), op=MPI.MAXLOC)"
                )
            raise Unsupported(
                f"mpish.secure takes a datatype with gaps (here {type_name(datatype)}; a vector, "
                "subarray, resized or padded type) in point-to-point calls (Send, Recv, Sendrecv...), "
                "Bcast, Gather, Scatter, Allgather, Alltoall, their v-forms (and their I and _init forms), "
                "Alltoallw and Neighbor_alltoallw, not in this call: pack the data into a contiguous buffer "
                "(numpy, or datatype.Pack(..., comm.raw)) or send the blocks point to point"
            )
    if count is not None:
        count = operator.index(count)  # a float count is mpi4py's TypeError
        if count < 0:
            raise ValueError(f"message: negative count {count}")
    offset = operator.index(displ) * size if displ is not None else 0
    if datatype is not None:  # a gap-free type may start past its buffer's start (Create_indexed([2], [1]))
        lower, _ = datatype.Get_true_extent()
        if lower < 0:
            raise Unsupported(f"mpish.secure cannot take {type_name(datatype)} with a negative lower bound "
                              f"({lower}): its data lie before the buffer, which mpish does not read or "
                              "write outside. Give the buffer from the first byte the datatype reaches (e.g. "
                              "the whole array) with a datatype whose displacements start at 0")
        offset += lower
    if offset:
        if offset > len(flat):
            raise ValueError(f"message: displacement {displ} out of bounds")
        flat = flat[offset:]
    return flat, count, size


def bottom_blocks(msg: Any, size: int, *, writable: bool = False) -> list[tuple[Any, int]] | None:
    """Per peer ``([MPI.BOTTOM, 1, datatype], bytes)`` of an ``Alltoallw`` message at absolute
    addresses (``[MPI.BOTTOM, (counts, displs), datatypes]``), or of a buffer whose datatypes
    have gaps (a halo's subarrays: displacements from its start), else None. Such blocks travel
    packed (:func:`pack`); the caller frees the datatypes (:func:`free_blocks`)."""
    try:
        if len(msg) == 3:
            base, (counts, displs), datatypes = msg
        else:
            base, counts, displs, datatypes = msg
    except (TypeError, ValueError):
        return None  # not this form: typed_vector_view says what is wrong
    if base is None or base is MPI.IN_PLACE or not isinstance(datatypes, (list, tuple)):
        return None
    if base is not MPI.BOTTOM:  # a buffer: blocks at byte displacements from its start
        if all(_contiguous(datatype_of(d)) for d in datatypes):
            return None  # plain bytes: typed_vector_view's path
        flat = parse(base, writable=writable)[0]  # a read-only receive buffer is refused here too
        if not len(counts) == len(displs) == len(datatypes) == size:
            raise ValueError(f"Alltoallw: expected {size} counts, displacements and datatypes")
        for count, displ, datatype in zip(counts, displs, datatypes, strict=True):
            first, end = item_span(int(count), datatype_of(datatype)) if int(count) > 0 else (0, 0)
            if int(count) > 0 and (int(displ) + first < 0 or int(displ) + end > len(flat)):
                raise ValueError(f"Alltoallw: a block of {count} at byte {displ} goes past the buffer "
                                 f"of {len(flat)} bytes")
        address = MPI.Get_address(flat)  # a halo's subarray or vector types: packed, as at BOTTOM
        displs = [address + int(displ) for displ in displs]
    if not len(counts) == len(displs) == len(datatypes) == size:
        raise ValueError(f"Alltoallw: expected {size} counts, displacements and datatypes")
    blocks = []
    for count, displ, datatype in zip(counts, displs, datatypes, strict=True):
        datatype = datatype_of(datatype)
        block = MPI.Datatype.Create_struct([int(count)], [int(displ)], [datatype]).Commit()
        blocks.append(([MPI.BOTTOM, 1, block], int(count) * datatype.Get_size()))
    return blocks


def free_blocks(blocks: list[tuple[Any, int]] | None) -> None:
    for spec, _ in blocks or []:
        spec[2].Free()


def _host_view(buf: Any) -> tuple[memoryview, str | None]:
    """(bytes, element format or None) of a host buffer without the buffer protocol (DLPack)."""
    try:
        view = memoryview(MPI.buffer(buf))  # type: ignore[arg-type]  # the stub lacks __buffer__
    except Exception:
        if not any(hasattr(buf, name) for name in ("__dlpack__", "__cuda_array_interface__")):
            raise TypeError(  # not a buffer at all (a str, say): mpi4py's TypeError too
                f"message: expecting a buffer or a list [buf, count, datatype], not {type(buf).__name__}"
            ) from None
        raise Unsupported(
            f"mpish.secure supports host-memory buffers only, not {type(buf).__name__}"
        ) from None
    return view, _element_format(buf)


_DLPACK_KINDS = {0: "i", 1: "u", 2: "f", 5: "c", 6: "b"}  # DLPack type code -> numpy kind


def _element_format(buf: Any) -> str | None:
    """The element type (a key of ``MPI._typedict``, e.g. ``i4``) of a DLPack or CUDA-interface buffer."""
    code: str | None = None
    interface = getattr(buf, "__cuda_array_interface__", None)
    if isinstance(interface, dict):
        code = str(interface.get("typestr", "")).lstrip("<>|=")
    elif hasattr(buf, "__dlpack__"):
        code = _dlpack_format(buf)
    return code if code in MPI._typedict else None


def _dlpack_format(buf: Any) -> str | None:
    """The element type of a DLPack tensor, read from its capsule (left unconsumed)."""
    import ctypes

    try:
        capsule = buf.__dlpack__()
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        address = get_pointer(capsule, b"dltensor")
    except Exception:
        return None
    # DLManagedTensor starts with its DLTensor: data (8), device (4+4), ndim (4), dtype (1+1+2).
    code = ctypes.c_uint8.from_address(address + 20).value
    bits = ctypes.c_uint8.from_address(address + 21).value
    lanes = ctypes.c_uint16.from_address(address + 22).value
    del capsule  # not consumed: its own destructor releases the tensor
    kind = _DLPACK_KINDS.get(code)
    if kind == "f" and lanes == 2:  # a complex number as two floats (complex long double, here)
        kind, lanes = "c", 1
        bits *= 2
    return None if kind is None or bits % 8 or lanes != 1 else f"{kind}{bits // 8}"


def byte_view(buf: Any, *, writable: bool) -> memoryview:
    """A flat byte view of an mpi4py buffer argument (the count, when given, is the total); a
    send buffer ``[buf, count, datatype]`` with gaps is packed into a copy (:func:`derived`)."""
    kind: type = buf.__class__
    if kind in _PLAIN_BUFFERS:  # the hot path: bytes, bytearray, memoryview, numpy array
        view = native_order(memoryview(buf))
        if view.c_contiguous and not (writable and view.readonly):
            return view if view.ndim == 1 and view.format == "B" else view.cast("B")
    if not writable:
        spec = derived(buf)
        if spec is not None:  # a datatype with gaps (a matrix column...): sent packed, as MPI does
            return pack(*spec)
    flat, count, size = parse(buf, writable=writable)
    if count is not None:
        if count * size > len(flat):
            raise ValueError("buffer count exceeds the buffer size")
        flat = flat[: count * size]
    return flat


def each_start(buf: Any, *, writable: bool) -> Any:
    """What a persistent request's every start sends from or receives into: the buffer's bytes
    (a bad buffer raises at the *_init, as MPI), or, for a datatype with gaps, the buffer spec
    itself, packed or scattered at each start (a matrix column changes between starts)."""
    if derived(buf) is not None:
        return buf
    return byte_view(buf, writable=writable)


def receive_into(buf: Any) -> tuple[memoryview, Any]:
    """(the bytes a receive lands in, what scatters them into ``buf`` once they arrived, or
    None): a datatype with gaps (a halo's subarray) is received packed, scattered by MPI at
    completion, through mpish's own copy of the datatype (MPI lets the user free it first)."""
    spec = derived(buf)
    if spec is None:
        return byte_view(buf, writable=True), None
    sink, into = memoryview(bytearray(spec[1])), [*spec[0][:-1], spec[0][-1].Dup()]
    return sink, lambda n: unpack(sink[:n], into, free=True)


def block_view(buf: Any, blocks: int, *, writable: bool) -> tuple[memoryview, int]:
    """(view, bytes per block) of a buffer of ``blocks`` equal blocks (Gather, Scatter, Alltoall...).

    In ``[buf, count, dtype]`` the count is per process, as in mpi4py; without a count the
    buffer's entries must split into ``blocks`` equal blocks (mpi4py's "cannot infer count").
    """
    flat, count, size = parse(buf, writable=writable)
    if count is None:
        entries = len(flat) // size
        if blocks and entries % blocks:
            raise ValueError(f"message: cannot infer count, number of entries {entries} is not a multiple "
                             f"of required number of blocks {blocks}")
        block = entries // blocks * size if blocks else 0
    else:
        block = count * size
        if block * blocks > len(flat):
            raise ValueError("buffer count exceeds the buffer size")
    return flat[: block * blocks], block


def typed_spec(buf: Any, storage: Any, nbytes: int) -> list[Any]:
    """``[storage, count, datatype]`` with the datatype of buffer argument ``buf`` (for Reduce_local)."""
    datatype: Any
    if isinstance(buf, (list, tuple)) and _is_datatype(buf[-1]):
        datatype = datatype_of(buf[-1])
    else:
        if isinstance(buf, (list, tuple)):
            buf = buf[0]
        try:
            fmt = native_order(memoryview(buf)).format.lstrip(_FORMAT_PREFIX)
        except TypeError:
            fmt = _host_view(buf)[1] or "B"
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


def _program_level() -> int:
    """The ``stacklevel`` of the program's frame that called into mpish (the first outside
    the package: the public method may be reached through a lock wrapper or another method)."""
    frame: Any = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("mpish."):
        frame, level = frame.f_back, level + 1
    return level


def warn_buf(buf: Any) -> int | None:
    """mpi4py's warning for the deprecated ``buf`` argument of ``recv`` and friends; the
    buffer's size in bytes, which bounds the pickled message as in mpi4py (None: no buffer)."""
    if buf is None:
        return None
    warnings.warn("the 'buf' argument is deprecated", UserWarning, stacklevel=_program_level())
    if isinstance(buf, int):  # mpi4py takes a byte count for a buffer it allocates
        return buf
    return byte_view(buf, writable=True).nbytes


def check_fits(nbytes: int, limit: int | None) -> None:
    """MPI's ERR_TRUNCATE, as mpi4py's ``recv(buf)`` raises it, for an object whose pickle is
    longer than the buffer given (the message is consumed, as MPI's truncated receive)."""
    if limit is not None and nbytes > limit:
        raise mpi_truncate(f"a message of {nbytes} bytes (the pickled object) does not fit the "
                           f"{limit}-byte buffer given to recv: give a larger one, or none")


_FITS: set[tuple[int, int]] = set()  # (op, datatype) handles of predefined pairs MPI reduced


def check_op(op: Any, buf: Any) -> None:
    """Raise MPI's error on this rank if the predefined ``op`` cannot reduce the datatype of
    buffer argument ``buf`` (MPI.BAND of doubles: ERR_OP), as raw MPI raises it on every rank.
    Only the ranks that combine blocks met it, so the others went on: a program that falls
    back to another call on the error hung (helper-118). One element of zeros is reduced
    here; a user's operation is not called (it may count its calls, or fail on zeros)."""
    datatype = typed_spec(buf, b"", 0)[2]
    if not isinstance(op, MPI.Op) or not op.is_predefined:
        return
    key = (op.handle, datatype.handle)
    if key in _FITS:
        return
    lower, span = datatype.Get_true_extent()
    size = max(datatype.Get_extent()[1], lower + span, 1)
    op.Reduce_local([bytearray(size), 1, datatype], [bytearray(size), 1, datatype])
    if datatype.is_predefined:  # a derived type's handle may be reused by another once freed
        _FITS.add(key)
