"""Derived datatypes with gaps (a matrix column, a subarray, a padded struct): what travels
packed, and the packing itself, done by MPI inside the process (a private duplicate of
COMM_SELF, never matched with the program's own messages). A datatype reaching outside its
buffer is refused here, before MPI touches any memory.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

_KINDS = {MPI.COMBINER_CONTIGUOUS: "contiguous", MPI.COMBINER_VECTOR: "vector",
          MPI.COMBINER_HVECTOR: "vector", MPI.COMBINER_INDEXED: "indexed", MPI.COMBINER_HINDEXED: "indexed",
          MPI.COMBINER_INDEXED_BLOCK: "indexed", MPI.COMBINER_HINDEXED_BLOCK: "indexed",
          MPI.COMBINER_STRUCT: "struct", MPI.COMBINER_SUBARRAY: "subarray", MPI.COMBINER_DARRAY: "darray",
          MPI.COMBINER_RESIZED: "resized", MPI.COMBINER_DUP: "duplicated"}


def type_name(datatype: Any) -> str:
    """A datatype as an error names it: MPI's name of a predefined one, the kind of a derived
    one (its MPI name is no help: Open MPI calls a resized MPI_DOUBLE "Dup MPI_DOUBLE")."""
    if datatype.is_named:
        return str(datatype.Get_name())
    kind = _KINDS.get(datatype.combiner, "derived")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} datatype"


def _contiguous(datatype: Any) -> bool:
    """True if a datatype's items are a gap-free run of bytes listed in memory order: then
    its bytes travel as they lie. Size, extent and true extent equal is not enough: a type
    may list its parts in another order (``Create_indexed([1, 1], [1, 0])`` swaps two
    values, a struct may declare its fields backwards, a vector may have a negative
    stride), and MPI sends them in the order listed (helper-121: a transpose demo got the
    untransposed matrix)."""
    return _gap_free(datatype) and (datatype.is_named or _in_order(datatype, 0))


def _gap_free(datatype: Any) -> bool:
    _, extent = datatype.Get_extent()
    _, true_extent = datatype.Get_true_extent()
    return bool(datatype.Get_size() == extent == true_extent)


_MAX_NESTING = 16  # deeper types are packed by MPI (always right, one copy more)


def _in_order(datatype: Any, depth: int) -> bool:
    """True if the type map lists a gap-free datatype's bytes in memory order, proved from how
    it was built (MPI_Type_get_contents); False for what is not proved (packed: correct)."""
    if depth > _MAX_NESTING:
        return False
    old, combiner, args = datatype.decode()
    if combiner == "STRUCT":
        parts = [(n, d, t) for n, d, t in zip(args["blocklengths"], args["displacements"], args["datatypes"],
                                              strict=True) if n]
        return all(_leaf(t, depth) for _, _, t in parts) and _abut(
            (d, n * t.Get_extent()[1]) for n, d, t in parts)
    if combiner == "RESIZED":  # its bytes are the old type's, whatever extent that one had:
        true_lower, true_extent = old.Get_true_extent()  # mpi4py's dtlib resizes a packed struct
        return bool(args["lb"] == true_lower == 0 and args["extent"] == old.Get_size() == true_extent
                    and (old.is_named or _in_order(old, depth + 1)))  # (MPI gave it an aligned extent)
    if not _leaf(old, depth):
        return False
    item = old.Get_extent()[1]
    if combiner in ("DUP", "CONTIGUOUS"):
        return True
    if combiner == "VECTOR":
        return bool(args["count"] <= 1 or args["stride"] == args["blocklength"])
    if combiner == "HVECTOR":
        return bool(args["count"] <= 1 or args["stride"] == args["blocklength"] * item)
    if combiner in ("INDEXED", "HINDEXED"):
        scale = item if combiner == "INDEXED" else 1
        blocks = zip(args["blocklengths"], args["displacements"], strict=True)
        return _abut((d * scale, n * item) for n, d in blocks)
    if combiner in ("INDEXED_BLOCK", "HINDEXED_BLOCK"):
        scale = item if combiner == "INDEXED_BLOCK" else 1
        return _abut((d * scale, args["blocklength"] * item) for d in args["displacements"])
    if combiner == "SUBARRAY":  # the whole array: its own order is memory's
        return bool(args["sizes"] == args["subsizes"] and not any(args["starts"]))
    return False


def _leaf(datatype: Any, depth: int) -> bool:
    """A part of a type: gap-free, from its own byte 0, in order."""
    lower, extent = datatype.Get_extent()
    true_lower, true_extent = datatype.Get_true_extent()
    if not (lower == true_lower == 0 and datatype.Get_size() == extent == true_extent):
        return False
    return bool(datatype.is_named or _in_order(datatype, depth + 1))


def _abut(blocks: Any) -> bool:
    """True if each non-empty (start, length) block starts where the one before it ended."""
    end = None
    for start, length in blocks:
        if length:
            if end is not None and start != end:
                return False
            end = start + length
    return True


def derived(buf: Any) -> tuple[Any, int] | None:
    """``(buf, bytes)`` if ``buf`` is ``[buf, count, datatype]`` or ``[buf, datatype]`` with a
    datatype that is not a gap-free run of bytes (e.g. ``Create_indexed_block``, a padded
    struct), else None: such data travel packed. Without a count, the buffer holds as many as
    fit, as mpi4py counts them (its size over the datatype's extent)."""
    if not isinstance(buf, (list, tuple)) or len(buf) not in (2, 3) or not isinstance(buf[-1], MPI.Datatype):
        return None
    datatype = buf[-1]
    if _contiguous(datatype) and buf[0] is not MPI.BOTTOM:  # at absolute addresses: MPI packs it too
        return None
    if len(buf) == 2:
        inferred = inferred_count(buf[0], datatype)
        if inferred is None:
            return None
        buf = [buf[0], inferred, datatype]
    count = buf[1]
    if not isinstance(count, int):
        return None
    _reaches_past(buf[0], count, datatype)
    return buf, count * datatype.Get_size()


def inferred_count(data: Any, datatype: Any) -> int | None:
    """The count of ``[data, datatype]``, as mpi4py infers it (the buffer's size over the
    datatype's extent); None if ``data`` is no buffer (buffers.parse says what is wrong)."""
    try:
        nbytes = memoryview(data).nbytes
    except TypeError:
        return None
    _, extent = datatype.Get_extent()
    if extent <= 0 or nbytes % extent:
        raise ValueError(f"message: cannot infer count, buffer length {nbytes} is not a multiple "
                         f"of datatype extent {extent}")
    return int(nbytes // extent)


def _reaches_past(buf: Any, count: int, datatype: Any) -> None:
    """Raise ValueError if ``count`` items of ``datatype`` reach outside ``buf``: MPI would read
    or write the memory around it (mpi4py does not check: raw MPICH corrupted its heap with
    ``[b, column]`` of a resized column, whose inferred count is the rows' times the columns')."""
    if buf is MPI.BOTTOM or count <= 0:
        return
    try:
        nbytes = memoryview(buf).nbytes
    except TypeError:
        return
    first, end = item_span(count, datatype)
    if first < 0 or end > nbytes:
        raise ValueError(f"message: {count} of {type_name(datatype)} span bytes "
                         f"{first} to {end} of a buffer of {nbytes}: MPI would reach outside it")


def item_span(count: int, datatype: Any) -> tuple[int, int]:
    """The bytes ``count`` (> 0) items of ``datatype`` reach from where the buffer starts:
    (first, end). Item i lies at i times the extent, which may be negative (a type resized to
    a negative extent lays its items backwards: helper-143 read and wrote before the buffer,
    where only item 0's start and the last item's end were checked)."""
    _, extent = datatype.Get_extent()
    lower, true_extent = datatype.Get_true_extent()
    last = (count - 1) * extent
    return min(0, last) + lower, max(0, last) + lower + true_extent


_SELF: list[Any] = []  # a private duplicate of COMM_SELF: never matched with the user's own messages


def _self() -> Any:
    if not _SELF:
        _SELF.append(MPI.COMM_SELF.Dup())
    return _SELF[0]


def pack(spec: Any, nbytes: int) -> memoryview:
    """The data of a derived-datatype message, packed by MPI (a copy inside this process)."""
    out = bytearray(nbytes)
    _self().Sendrecv(spec, 0, 0, [out, MPI.PACKED], 0, 0)
    return memoryview(out)


def unpack(data: Any, spec: Any, *, free: bool = False) -> None:
    """Scatter packed bytes into a derived-datatype message (a copy inside this process);
    ``free``: the spec's datatype is mpish's own copy, freed once used."""
    try:
        _self().Sendrecv([data, MPI.PACKED], 0, 0, spec, 0, 0)
    finally:
        if free:
            spec[-1].Free()


def own_datatypes(value: Any) -> tuple[Any, list[Any]]:
    """``value`` (an argument of an ``_init``: a buffer spec, Alltoallw's list of datatypes)
    with each derived datatype in it replaced by mpish's own copy (``Dup``), and the copies,
    for the persistent request to free with itself. MPI lets the program free its datatype
    once the request was made, and each start uses the spec again: with the program's freed
    one, a start made by MPI failed where MPI's wait could not say it, and the buffer was
    never sent nor written (helper-132's case, a persistent Gather of columns)."""
    copies: dict[int, Any] = {}  # id of the program's datatype -> mpish's copy (one per datatype)
    return _owned(value, copies), list(copies.values())


def _owned(value: Any, copies: dict[int, Any]) -> Any:
    if isinstance(value, MPI.Datatype) and not value.is_predefined:
        if id(value) not in copies:
            copies[id(value)] = value.Dup()
        return copies[id(value)]
    if isinstance(value, (list, tuple)):
        parts = [_owned(part, copies) for part in value]
        if any(new is not old for new, old in zip(parts, value, strict=True)):
            return parts if isinstance(value, list) else tuple(parts)
    return value

