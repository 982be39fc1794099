"""Products with a matrix that is packed once and then used for many products.

A BLAS computes ``C += A @ B`` in two stages: it copies ("packs") panels of
both operands into the order its micro-kernel streams through, then runs the
kernel over the packed panels. For the per-step product of a recurrent layer,
``(B, S) @ (S, 4S)`` with a batch of a few dozen rows, packing the weight
matrix costs about as much as the arithmetic, and it is the very same matrix
in every step of the pass.

The OpenBLAS that NumPy's wheels bundle is built for several CPUs at once and
exports the packing routines and kernels of each (``sgemm_incopy_HASWELL``,
``sgemm_kernel_SKYLAKEX``, ...). This module asks the library which CPU it
chose, packs a matrix with that CPU's routine once (:class:`PackedMatrix`), and
for every product packs only the small operand and calls the kernel
(:func:`add_products`). Products large enough to share are split between
the threads of the handler's team (:mod:`brainstorm.handlers._threads`)
while a session is open (``ctypes`` releases the GIL during the calls): each
thread computes its own share of the output columns or, for products with
many rows (all time steps at once), its own chunks of rows.

Nothing here is a public interface of OpenBLAS, so nothing is trusted
blindly: the panel width is measured by packing a known matrix, and every
dtype must compute a set of products with awkward shapes right (compared with
NumPy) before it is used. Without the routines (another BLAS, another build),
with a failed check, or with the environment variable
``BRAINSTORM_PACKED_GEMM=0`` (or ``BRAINSTORM_NUMPY_BLAS=0``),
:func:`add_products` returns False and the caller uses ordinary products.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from brainstorm.handlers import _blas, _threads
from brainstorm.handlers.base_handler import PreparedMatrix, block_widths

__all__ = ["PackedMatrix", "add_products", "aligned_empty", "available", "kernels_for"]

#: dtype -> (BLAS letter, ctypes scalar type).
_KINDS = {
    np.dtype(np.float32): ("s", ctypes.c_float),
    np.dtype(np.float64): ("d", ctypes.c_double),
}
#: The CPUs whose routines are used: those checked here (SkylakeX, Haswell) and
#: the ones OpenBLAS builds from the same gemm kernels as far as we know
#: (Cooperlake and Sapphire Rapids from SkylakeX's, Zen from Haswell's; not run
#: here). Others keep ordinary products: the Sandy Bridge kernel, for one,
#: crashed in the self-test.
_KNOWN_CORES = frozenset({"SKYLAKEX", "COOPERLAKE", "SAPPHIRERAPIDS", "HASWELL", "ZEN"})

#: Alignment of packed buffers in bytes (the kernels may use aligned vector loads).
_ALIGNMENT = 64
#: Below this many floating point operations a product stays on one thread.
PARALLEL_FLOPS = 4e6
_state = {"loaded": False, "kernels": {}, "lock": threading.RLock()}


class _Kernels:
    """The routines of one dtype, named as the BLAS names them for its CPU.

    ``pack_row_major(K, M, a, lda, buffer)`` and ``pack_column_major(...)`` pack
    an ``(M, K)`` matrix (rows ``m`` at ``a + m * lda`` or columns ``k`` at
    ``a + k * lda``) into panels of ``width`` rows; ``pack_right(K, N, b, ldb,
    buffer)`` packs a column-major ``(K, N)`` matrix; ``kernel(M, N, K, alpha,
    packed_a, packed_b, c, ldc)`` adds ``alpha * A @ B`` to the column-major ``C``.
    """

    def __init__(self, dtype, functions, scalar):
        self.dtype = dtype
        self.pack_row_major, self.pack_column_major, self.pack_right, self.kernel = functions
        self.scalar = scalar
        self.width = None
        #: columns per panel of ``pack_right`` (the kernel's N unroll)
        self.right_width = None


def _bind(lib, kind, core, scalar):
    """The four routines of ``kind`` ('s' or 'd') for ``core``, or None."""
    index, pointer = ctypes.c_int64, ctypes.c_void_p
    functions = []
    for name in ("incopy", "itcopy", "oncopy", "kernel"):
        try:
            function = getattr(lib, f"{kind}gemm_{name}_{core}")
        except AttributeError:
            return None
        if name == "kernel":
            function.argtypes = [index, index, index, scalar, pointer, pointer, pointer, index]
        else:
            function.argtypes = [index, index, pointer, index, pointer]
        function.restype = ctypes.c_int
        functions.append(function)
    return functions


def _ensure_loaded():
    _blas.load_once(_state, _load)


def _load():
    found = _blas.library()
    if found is None or os.environ.get("BRAINSTORM_PACKED_GEMM", "1").strip() == "0":
        return
    if ctypes.sizeof(ctypes.c_void_p) != 8:  # the routines take 64-bit sizes
        return
    lib = found[0]
    get_core = _blas.openblas_function("get_corename")
    if get_core is None:
        return
    get_core.argtypes, get_core.restype = [], ctypes.c_char_p
    core = (get_core() or b"").decode("ascii", "replace").strip().upper()
    if core not in _KNOWN_CORES:
        return
    for dtype, (kind, scalar) in _KINDS.items():
        functions = _bind(lib, kind, core, scalar)
        if functions is None:
            continue
        kernels = _Kernels(dtype, functions, scalar)
        kernels.width = _panel_width(kernels)
        kernels.right_width = _panel_width(kernels, right=True)
        if kernels.width is not None and _self_test(kernels):
            _state["kernels"][dtype] = kernels


def kernels_for(dtype):
    """The checked routines of ``dtype`` (see :class:`_Kernels`), or None."""
    if not _state["loaded"]:
        _ensure_loaded()
    return _state["kernels"].get(np.dtype(dtype))


def available(dtype=np.float32):
    """Whether packed products work for ``dtype`` here (routines found and checked)."""
    return kernels_for(dtype) is not None


def aligned_empty(size, dtype):
    """An uninitialised 1-D array of ``size`` items starting on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size + _ALIGNMENT // itemsize, dtype=dtype)
    skip = (-raw.ctypes.data % _ALIGNMENT) // itemsize
    return raw[skip : skip + size]


def _panel_width(kernels, right=False):
    """How many rows the panels of the left operand hold (with ``right``: how many
    columns those of the right one, ``pack_right``), read off a packed known
    matrix; None if the layout is not the expected one."""
    lines = 64  # rows (or columns) of K = 2 values each, value 2 * line + k
    known = np.arange(2 * lines, dtype=kernels.dtype)
    packed = aligned_empty(2 * lines, kernels.dtype)
    packed.fill(-1)
    pack = kernels.pack_right if right else kernels.pack_row_major
    pack(2, lines, known.ctypes.data, 2, packed.ctypes.data)
    starts = np.flatnonzero(packed == 1)  # where k = 1 of the first panel begins
    if starts.size == 0:
        return None
    width = int(starts[0])
    first = 2 * np.arange(width)
    if width not in (1, 2, 4, 8, 16, 32, 64) or not np.array_equal(
        packed[: 2 * width], np.concatenate([first, first + 1])
    ):
        return None
    return width


def _items(stride, dtype):
    return stride // np.dtype(dtype).itemsize


def _unit_columns(m):
    """Whether a 2-D array's rows are contiguous (unit stride along its columns)."""
    return m.shape[1] <= 1 or m.strides[1] == m.itemsize


def _row_stride(m):
    """The row stride of a 2-D array with contiguous rows, in items (at least 1)."""
    if m.shape[0] <= 1:
        return max(1, m.shape[1])
    return _items(m.strides[0], m.dtype)


def _qualifies(m, dtype):
    """Whether ``m`` is a 2-D array of ``dtype`` with contiguous rows (alignment
    depends on the address: :func:`add_products` checks it on every call)."""
    return (
        isinstance(m, np.ndarray)
        and m.ndim == 2
        and m.dtype == dtype
        and _unit_columns(m)
        and m.strides[0] % m.itemsize == 0
        and _row_stride(m) >= max(1, m.shape[1])
    )


class PackedMatrix(PreparedMatrix):
    """A matrix prepared for :func:`add_products` (see :class:`PreparedMatrix`).

    The blocks a product needs are packed on first use and kept, so the
    values are those of the matrix at that time: prepare it anew after it
    changed.
    """

    def __init__(self, matrix, transpose=False):
        super().__init__(matrix, transpose)
        self._blocks = {}
        self._addresses = {}
        self._scratch = {}
        self._plans = {}
        #: ``(first, last + 1)`` byte addresses the matrix spans (for the overlap
        #: check of :func:`add_products`)
        self.extent = _byte_bounds(matrix)

    def packed_block_address(self, kernels, k0, k1, n0, n1):
        """The address of :meth:`packed_block` (kept with the block)."""
        key = (k0, k1, n0, n1)
        address = self._addresses.get(key)
        if address is None:
            address = self._addresses[key] = self.packed_block(kernels, *key).ctypes.data
        return address

    def packed_block(self, kernels, k0, k1, n0, n1):
        """The packed ``(n1 - n0, k1 - k0)`` transpose of block ``P[k0:k1, n0:n1]``."""
        key = (k0, k1, n0, n1)
        block = self._blocks.get(key)
        if block is None:
            view = self.matrix[n0:n1, k0:k1].T if self.transpose else self.matrix[k0:k1, n0:n1]
            m_size, k_size = n1 - n0, k1 - k0
            block = aligned_empty(m_size * k_size, kernels.dtype)  # (two threads may
            # pack the same block at once: the first one kept is used by both, so
            # that no task is left pointing into a block nobody holds)
            s0, s1 = view.strides
            item = view.itemsize
            if s1 == item and s0 % item == 0 and s0 // item >= m_size:
                # A = P^T with A[m, k] at k * s0 + m: column-major
                kernels.pack_column_major(
                    k_size, m_size, view.ctypes.data, s0 // item, block.ctypes.data
                )
            else:
                rows = view.T if s0 == item and s1 % item == 0 and s1 // item >= k_size else None
                if rows is None:
                    rows = np.ascontiguousarray(view.T)  # (M, K) with contiguous rows
                kernels.pack_row_major(
                    k_size, m_size, rows.ctypes.data, _row_stride(rows), block.ctypes.data
                )
            block = self._blocks.setdefault(key, block)
        return block

    def scratch(self, size):
        """A kept aligned buffer of at least ``size`` items for the packed left
        operands, one per thread (a pass may use the matrix from several threads)."""
        thread = threading.get_ident()
        buffer = self._scratch.get(thread)
        if buffer is None or buffer.size < size:
            buffer = self._scratch[thread] = aligned_empty(size, self.matrix.dtype)
        return buffer


def add_products(a_blocks, packed, out_blocks):
    """``out_j += sum_i a_i @ P_ij`` with the kernels; False (nothing written) if it can't.

    Args:
        a_blocks: list of ``(B, K_i)`` arrays, the column blocks of the left operand.
        packed: :class:`PackedMatrix` ``P`` of shape ``(sum K_i, sum N_j)``.
        out_blocks: list of ``(B, N_j)`` arrays (read and written), the column
            blocks of the result; they must not overlap each other or the inputs.

    Returns:
        True when done; False when the kernels are unavailable for the dtype
        or an array does not qualify (not a 2-D array of the matrix's dtype
        with contiguous rows).

    Rows whose packed left operand exceeds :data:`CHUNK_BYTES` are done in
    chunks of rows (see :func:`_row_chunks`). What depends only on the
    shapes, strides and dtypes is worked out once per matrix and kept (a
    recurrent layer makes hundreds of products of the same layout per pass).
    """
    matrix = packed.matrix
    if not isinstance(matrix, np.ndarray) or not a_blocks or not out_blocks:
        return False
    arrays = (*a_blocks, *out_blocks)
    if not all(isinstance(m, np.ndarray) for m in arrays):
        return False
    key = (len(a_blocks), *((m.shape, m.strides, m.dtype) for m in arrays))
    plan = packed._plans.get(key)
    if plan is None:
        plan = packed._plans[key] = _Plan.make(a_blocks, packed, out_blocks)
    if plan is False:
        return False
    if not all(out.flags.writeable for out in out_blocks):
        return False  # (NumPy then refuses to write, as it should)
    addresses = [_address(m) for m in arrays]
    item = plan.item
    if any(address % item for address in addresses):
        return False  # not aligned
    # the contract forbids overlaps (outputs with inputs, with the matrix or with
    # each other: threads write whole output blocks); the fallback then says so
    n_a = len(a_blocks)
    taken = [(a, a + e) for a, e in zip(addresses[:n_a], plan.extents[:n_a])]
    taken.append(packed.extent)
    for a, e in zip(addresses[n_a:], plan.extents[n_a:]):
        if any(a < stop and start < a + e for start, stop in taken):
            return False
        taken.append((a, a + e))
    if plan.empty:
        return True
    kernels, batch = plan.kernels, plan.batch
    team = _threads.team()
    parts = team.size if plan.flops >= PARALLEL_FLOPS and team is not None and team.active else 1
    a_parts = list(zip(addresses[:n_a], plan.strides[:n_a]))
    out_parts = list(zip(addresses[n_a:], plan.strides[n_a:]))
    chunks = _row_chunks(batch, plan.bytes_per_row, parts)
    if len(chunks) > 1:
        # many rows (e.g. all time steps at once): chunks of rows whose packed
        # left operand stays in the cache while the kernel runs over it, dealt
        # out to the threads (each packs its own chunks)
        def rows(my_chunks):
            for start, stop in my_chunks:
                tasks = _tasks(
                    kernels,
                    stop - start,
                    [(address + start * stride * item, stride) for address, stride in a_parts],
                    packed,
                    [(address + start * stride * item, stride) for address, stride in out_parts],
                    plan,
                )
                _run_tasks(kernels, tasks, stop - start, None)

        if parts > 1:
            team.run([lambda i=i: rows(chunks[i::parts]) for i in range(parts)])
        else:
            rows(chunks)
        return True
    tasks = _tasks(kernels, batch, a_parts, packed, out_parts, plan)
    if parts > 1 and plan.equal_outs and len(out_blocks) % parts == 0:
        # equal output blocks, as many per thread (the four gates of an LSTM step):
        # whole blocks to each thread, 0.92-0.94 of the time of sharing every block
        # by columns (fewer, wider kernel calls)
        blocks = [tasks[j * n_a : (j + 1) * n_a] for j in range(len(out_blocks))]
        mine = [[task for block in blocks[i::parts] for task in block] for i in range(parts)]
        team.run([lambda i=i: _run_tasks(kernels, mine[i], batch, None) for i in range(parts)])
    elif parts > 1:
        team.run([lambda i=i: _run_tasks(kernels, tasks, batch, (i, parts)) for i in range(parts)])
    else:
        _run_tasks(kernels, tasks, batch, None)
    return True


class _Plan:
    """What a product's checks and bookkeeping give for one layout of its arrays
    (everything but their addresses); see :func:`add_products`."""

    @classmethod
    def make(cls, a_blocks, packed, out_blocks):
        """The plan, or False when the kernels or the arrays do not qualify.

        Raises:
            ValueError: from :func:`block_widths` (the blocks do not fit).
        """
        kernels = kernels_for(packed.matrix.dtype)
        if kernels is None:
            return False
        dtype = kernels.dtype
        arrays = (*a_blocks, *out_blocks)
        if not all(_qualifies(m, dtype) for m in arrays):
            return False
        plan = cls()
        plan.kernels = kernels
        plan.item = np.dtype(dtype).itemsize
        plan.batch = a_blocks[0].shape[0]
        plan.widths_k, plan.widths_n = block_widths(a_blocks, packed, out_blocks)
        plan.empty = plan.batch == 0 or packed.shape[0] == 0 or packed.shape[1] == 0
        plan.flops = 2.0 * plan.batch * packed.shape[0] * packed.shape[1]
        plan.bytes_per_row = sum(plan.widths_k) * plan.item
        plan.strides = [_row_stride(m) for m in arrays]
        # bytes from an array's first element to the end of its last
        plan.extents = [
            0 if m.size == 0 else (m.shape[0] - 1) * m.strides[0] + m.shape[1] * m.itemsize
            for m in arrays
        ]
        plan.equal_outs = len(set(plan.widths_n)) == 1
        return plan


def _byte_bounds(m):
    """``(low, high)``: the addresses of an array's lowest byte and one past its highest."""
    if not isinstance(m, np.ndarray) or m.size == 0:
        return (0, 0)
    start = m.ctypes.data
    low = sum(min(0, (n - 1) * s) for n, s in zip(m.shape, m.strides))
    high = sum(max(0, (n - 1) * s) for n, s in zip(m.shape, m.strides))
    return (start + low, start + high + m.itemsize)


def _address(m):
    """The address of an array's first element (a third of the time of
    ``m.ctypes.data`` for writable contiguous arrays)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(m))
    except (TypeError, ValueError, BufferError):
        return m.ctypes.data


#: The longest reduction (K) of one kernel call. OpenBLAS's own driver never
#: passes more than its block size (GEMM_Q, 256 for double precision on AVX2),
#: and some kernels rely on it: the AVX2 double-precision one copies its packed
#: operand into a stack buffer of that size, and a longer K overruns it.
MAX_REDUCTION = 256

#: About the most bytes of packed left operand (rows times the reduction) one
#: kernel call streams through for every panel of the matrix: more rows than
#: that are done in chunks (the whole would come from memory again for every
#: panel). Chunks hold at least 8 rows, so a very long reduction exceeds it.
CHUNK_BYTES = 4 << 20


def _row_chunks(batch, bytes_per_row, parts):
    """``(start, stop)`` chunks of the ``batch`` rows of a product.

    One chunk when all rows fit :data:`CHUNK_BYTES`; else chunks as even as can
    be, each a multiple of 8 rows but the last, about ``CHUNK_BYTES`` each (more
    only where 8 rows alone exceed it), their number a multiple of ``parts``
    (the threads sharing them) unless there are fewer blocks of 8 rows.
    """
    if batch * bytes_per_row <= CHUNK_BYTES:
        return [(0, batch)]
    count = -(-batch * bytes_per_row // CHUNK_BYTES)
    count = -(-count // parts) * parts
    units = -(-batch // 8)  # blocks of 8 rows, dealt out as evenly as can be
    count = min(count, units)
    chunks, start = [], 0
    for index in range(count):
        stop = min(batch, start + 8 * (units // count + (index < units % count)))
        chunks.append((start, stop))
        start = stop
    return chunks


def _tasks(kernels, batch, a_parts, packed, out_parts, plan):
    """One ``(M, K, packed_a, packed_b, c, ldc, itemsize)`` per pair of blocks (M =
    output columns), from ``(address, row stride)`` of the blocks' arrays: packs
    the left blocks (their ``batch`` rows) into the matrix's scratch space."""
    item = plan.item
    scratch = packed.scratch(sum(plan.widths_k) * batch).ctypes.data  # kept by the matrix
    right, offset, k0 = [], 0, 0
    for (address, stride), width in zip(a_parts, plan.widths_k):
        # in pieces of at most MAX_REDUCTION (see there)
        for start in range(0, width, MAX_REDUCTION):
            piece = min(MAX_REDUCTION, width - start)
            part = scratch + offset * item
            # B = a^T with B[k, b] at b * lda + k: column-major, as the packing wants it
            kernels.pack_right(piece, batch, address + start * item, stride, part)
            right.append((k0, piece, part))
            offset, k0 = offset + piece * batch, k0 + piece
    tasks, n0 = [], 0
    for (c, ldc), width_n in zip(out_parts, plan.widths_n):
        for k0, width_k, part in right:
            block = packed.packed_block_address(kernels, k0, k0 + width_k, n0, n0 + width_n)
            tasks.append((width_n, width_k, block, part, c, ldc, item))
        n0 += width_n
    return tasks


def _run_tasks(kernels, tasks, batch, part):
    """Run ``tasks``; ``part`` = (index, parts) runs only that share of every output's columns."""
    one = kernels.scalar(1.0)
    width = kernels.width
    for m_size, k_size, a, b, c, ldc, item in tasks:
        start, stop = 0, m_size
        if part is not None:
            index, parts = part
            panels = -(-m_size // width)
            start = min(m_size, (panels * index // parts) * width)
            stop = min(m_size, (panels * (index + 1) // parts) * width)
        if stop > start and k_size > 0:
            kernels.kernel(
                stop - start,
                batch,
                k_size,
                one,
                a + start * k_size * item,
                b,
                c + start * item,
                ldc,
            )


def _self_test(kernels):
    """Whether ``kernels`` compute products of awkward shapes right (against NumPy)."""
    rng = np.random.RandomState(0)
    dtype = kernels.dtype
    tolerance = 1e-4 if dtype == np.float32 else 1e-11
    saved = _state["kernels"].get(dtype)
    _state["kernels"][dtype] = kernels
    try:
        # (batch, K widths, N widths, transpose, split over threads)
        for batch, widths_k, widths_n, transpose, split in (
            (1, [1], [1], False, False),
            (5, [7, 3], [37, 2, 16], False, False),
            (5, [7, 3], [37, 2, 16], True, True),
            (13, [33], [70], True, True),
            (50, [64, 17], [40], False, True),
        ):
            k_total, n_total = sum(widths_k), sum(widths_n)
            matrix = rng.standard_normal((n_total, k_total) if transpose else (k_total, n_total))
            matrix = matrix.astype(dtype)
            a_parent = rng.standard_normal((batch, k_total + 3)).astype(dtype)
            out_parent = rng.standard_normal((batch, n_total + 5)).astype(dtype)
            expected = out_parent.astype(np.float64)
            p = (matrix.T if transpose else matrix).astype(np.float64)
            expected[:, :n_total] += a_parent[:, :k_total].astype(np.float64) @ p
            a_blocks = _column_blocks(a_parent, widths_k)
            out_blocks = _column_blocks(out_parent, widths_n)
            packed = PackedMatrix(matrix, transpose)
            plan = _Plan.make(a_blocks, packed, out_blocks)
            if plan is False:
                return False
            tasks = _tasks(
                kernels,
                batch,
                [(m.ctypes.data, _row_stride(m)) for m in a_blocks],
                packed,
                [(m.ctypes.data, _row_stride(m)) for m in out_blocks],
                plan,
            )
            if split:  # both halves in this thread, one after the other
                _run_tasks(kernels, tasks, batch, (0, 2))
                _run_tasks(kernels, tasks, batch, (1, 2))
            else:
                _run_tasks(kernels, tasks, batch, None)
            scale = 1 + np.abs(expected).max()
            if not np.all(np.abs(out_parent - expected) <= tolerance * scale):
                return False
        return True
    finally:
        if saved is None:
            _state["kernels"].pop(dtype, None)
        else:
            _state["kernels"][dtype] = saved


def _column_blocks(parent, widths):
    blocks, start = [], 0
    for width in widths:
        blocks.append(parent[:, start : start + width])
        start += width
    return blocks
