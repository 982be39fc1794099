"""Direct calls into the BLAS library that NumPy itself ships with (no new dependency).

``np.dot`` covers most needs, but it cannot accumulate into its output
(``C += A @ B`` costs a temporary and a second pass over ``C``), it copies
operands whose rows are strided, and ``out=`` must be C-contiguous. The
NumPy wheels on PyPI bundle OpenBLAS (``numpy.libs/libscipy_openblas64_*``,
``numpy/.dylibs``) and export its CBLAS interface under the ``scipy_`` prefix,
so these few routines call ``cblas_?gemm`` and ``cblas_?axpy`` of that very
library through :mod:`ctypes`: same threads, same kernels, no compiled
extension.

Every call checks its arrays (dtype, alignment, a unit stride in one
dimension, no overlap between output and inputs) and returns ``False`` when
it cannot take them, and the callers then fall back to plain NumPy. When the
library is not found (NumPy built against another BLAS, or a layout this
module does not know), or the environment variable ``BRAINSTORM_NUMPY_BLAS``
is ``0``, every call returns ``False``. The library is checked with a small
product before first use; a wrong answer disables it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

__all__ = [
    "available",
    "axpy",
    "axpy_accepts",
    "gemm",
    "gemm_accepts",
    "library",
    "load_once",
    "openblas_function",
    "set_threads",
    "threads_adjustable",
]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

#: (symbol prefix, symbol suffix, integer type) of the CBLAS flavours we know, best first.
_FLAVOURS = (
    ("scipy_cblas_", "64_", ctypes.c_int64),  # NumPy >= 2 wheels (scipy-openblas64)
    ("cblas_", "64_", ctypes.c_int64),  # NumPy 1.2x wheels (openblas64_)
    ("scipy_cblas_", "", ctypes.c_int32),
    ("cblas_", "", ctypes.c_int32),
)

_state = {"loaded": False, "gemm": {}, "axpy": {}, "library": None, "lock": threading.RLock()}


def _library_paths():
    """Shared libraries bundled with the installed NumPy that look like OpenBLAS."""
    root = os.path.dirname(os.path.abspath(np.__file__))
    folders = [
        os.path.join(os.path.dirname(root), "numpy.libs"),  # Linux and Windows wheels
        os.path.join(root, ".dylibs"),  # macOS wheels
        os.path.join(root, "_core"),
    ]
    paths = []
    for folder in folders:
        for pattern in ("*openblas*.so*", "*openblas*.dylib", "*openblas*.dll"):
            paths.extend(sorted(glob.glob(os.path.join(folder, pattern))))
    return paths


def _bind(lib, prefix, suffix, integer):
    """The (s, d) gemm and axpy functions of ``lib`` with this naming, or None."""
    functions = {}
    for kind, ctype in (("s", ctypes.c_float), ("d", ctypes.c_double)):
        try:
            gemm = getattr(lib, f"{prefix}{kind}gemm{suffix}")
            axpy = getattr(lib, f"{prefix}{kind}axpy{suffix}")
        except AttributeError:
            return None
        pointer = ctypes.c_void_p
        gemm.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer]
        gemm.argtypes += [ctype, pointer, integer, pointer, integer, ctype, pointer, integer]
        gemm.restype = None
        axpy.argtypes = [integer, ctype, pointer, integer, pointer, integer]
        axpy.restype = None
        functions[kind] = (gemm, axpy)
    return functions


def load_once(state, load):
    """Run ``load()`` once for ``state`` (a dict: ``'loaded'`` says it ran, ``'lock'`` an RLock).

    Another thread (a deferred job on a helper, say) waits until it is done
    instead of finding the result half made; calls from within ``load`` itself
    return at once.
    """
    with state["lock"]:
        if state["loaded"] or state.get("loading"):
            return
        state["loading"] = True
        try:
            load()
        finally:
            state["loading"] = False
            state["loaded"] = True


def _ensure_loaded():
    load_once(_state, _load)


def _load():
    if os.environ.get("BRAINSTORM_NUMPY_BLAS", "1").strip() == "0":
        return
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for flavour in _FLAVOURS:
            functions = _bind(lib, *flavour)
            if functions is None:
                continue
            _state["gemm"] = {np.dtype(np.float32): functions["s"][0]}
            _state["gemm"][np.dtype(np.float64)] = functions["d"][0]
            _state["axpy"] = {np.dtype(np.float32): functions["s"][1]}
            _state["axpy"][np.dtype(np.float64)] = functions["d"][1]
            if _self_test():
                _state["library"] = (lib, flavour)
                return
            _state["gemm"], _state["axpy"] = {}, {}
    _state["gemm"], _state["axpy"] = {}, {}


def library():
    """``(ctypes library, (prefix, suffix, integer type))`` of the BLAS that passed
    its check, or None (see :func:`available`)."""
    if not _state["loaded"]:
        _ensure_loaded()
    return _state["library"]


def openblas_function(name):
    """The OpenBLAS function ``openblas_<name>`` of the bound library (under its
    naming, e.g. ``scipy_openblas_<name>64_``), or None."""
    found = library()
    if found is None:
        return None
    lib, (prefix, suffix, _) = found
    base = prefix[: -len("cblas_")] if prefix.endswith("cblas_") else ""
    return getattr(lib, f"{base}openblas_{name}{suffix}", None)


def threads_adjustable():
    """Whether :func:`set_threads` can set the BLAS library's number of threads."""
    set_threads(None)
    return _state["threads"] is not None


def set_threads(count):
    """Let the BLAS library use ``count`` threads (None: leave it); returns the
    number it used before, or None (and changes nothing) if it cannot be told."""
    if "threads" not in _state:
        getter, setter = openblas_function("get_num_threads"), openblas_function("set_num_threads")
        if getter is not None and setter is not None:
            getter.argtypes, getter.restype = [], ctypes.c_int
            setter.argtypes, setter.restype = [ctypes.c_int], None
            _state["threads"] = (getter, setter)
        else:
            _state["threads"] = None
    functions = _state["threads"]
    if functions is None:
        return None
    getter, setter = functions
    before = getter()
    if count is not None and before != count:
        setter(int(count))
    return before


def _self_test():
    """Whether the bound functions compute a small product and update correctly."""
    rng = np.random.RandomState(0)
    for dtype in (np.float32, np.float64):
        a = rng.rand(5, 3).astype(dtype)
        b = rng.rand(4, 3).astype(dtype)
        c = rng.rand(5, 4).astype(dtype)
        expected = 2 * a @ b.T + c
        y = rng.rand(7).astype(dtype)
        x = rng.rand(7).astype(dtype)
        expected_y = y + 3 * x
        if not (gemm(a, b.T, c, alpha=2.0, beta=1.0) and axpy(3.0, x, y)):
            return False
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        if not (np.allclose(c, expected, rtol=tolerance) and np.allclose(y, expected_y)):
            return False
    return True


def available():
    """Whether NumPy's own BLAS could be found and passed its check."""
    if not _state["loaded"]:
        _ensure_loaded()
    return bool(_state["gemm"])


def _layout(m):
    """``(transposed, leading dimension)`` of a 2-D array for a row-major BLAS call,
    or None if neither dimension has unit stride."""
    rows, cols = m.shape
    size = m.itemsize
    s0, s1 = m.strides
    if (s1 == size or cols == 1) and s0 % size == 0 and s0 // size >= max(1, cols):
        return False, s0 // size
    if rows == 1 and (s1 == size or cols == 1):
        return False, max(1, cols)
    if (s0 == size or rows == 1) and s1 % size == 0 and s1 // size >= max(1, rows):
        return True, s1 // size
    if cols == 1 and (s0 == size or rows == 1):
        return True, max(1, rows)
    return None


def _usable(*arrays):
    dtype = arrays[-1].dtype
    return all(
        isinstance(m, np.ndarray)
        and m.ndim == 2
        and m.dtype == dtype
        and m.flags.aligned
        and m.size > 0
        for m in arrays
    )


def _gemm_plan(a, b, out):
    """The BLAS function and arguments for ``out = alpha * a @ b + beta * out``
    (alpha and beta left out), or None if the arrays do not qualify."""
    if not _state["loaded"]:
        _ensure_loaded()
    function = _state["gemm"].get(out.dtype) if isinstance(out, np.ndarray) else None
    if function is None or not _usable(a, b, out) or not out.flags.writeable:
        return None
    m, n = out.shape
    k = a.shape[1]
    if a.shape[0] != m or b.shape != (k, n):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} do not give {out.shape}")
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return None
    layout_out = _layout(out)
    if layout_out is None:
        return None
    if layout_out[0]:  # out is column-major: compute out.T = b.T @ a.T instead
        a, b, out = b.T, a.T, out.T
        m, n = n, m
    layout_a, layout_b = _layout(a), _layout(b)
    if layout_a is None or layout_b is None:
        return None
    (trans_a, lda), (trans_b, ldb) = layout_a, layout_b
    ldc = _layout(out)[1]
    head = (
        _ROW_MAJOR,
        _TRANS if trans_a else _NO_TRANS,
        _TRANS if trans_b else _NO_TRANS,
        m,
        n,
        k,
    )
    return function, head, (a.ctypes.data, lda, b.ctypes.data, ldb), (out.ctypes.data, ldc)


def gemm_accepts(a, b, out):
    """Whether :func:`gemm` can take these arrays (it would not return False)."""
    return _gemm_plan(a, b, out) is not None


def gemm(a, b, out, alpha=1.0, beta=0.0):
    """``out = alpha * a @ b + beta * out`` in place with BLAS; False if it can't.

    ``a``, ``b`` and ``out`` are 2-D arrays of one float dtype (float32 or
    float64), each with unit stride along one of its dimensions (C- or
    F-ordered, row or column slices of those are fine); ``out`` must not
    overlap ``a`` or ``b``. With ``beta=1`` the product is added into ``out``
    without a temporary. Returns True when done, False (and leaves ``out``
    untouched) when the arrays do not qualify or no BLAS is available.
    """
    plan = _gemm_plan(a, b, out)
    if plan is None:
        return False
    function, head, operands, result = plan
    function(*head, alpha, *operands, beta, *result)
    return True


def axpy_accepts(x, y):
    """Whether :func:`axpy` can take these arrays (it would not return False)."""
    if not _state["loaded"]:
        _ensure_loaded()
    function = _state["axpy"].get(y.dtype) if isinstance(y, np.ndarray) else None
    return not (
        function is None
        or not isinstance(x, np.ndarray)
        or x.dtype != y.dtype
        or x.size != y.size
        or x.size == 0
        or not (x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable)
        or not (x.flags.aligned and y.flags.aligned)
        or np.may_share_memory(x, y)
    )


def axpy(alpha, x, y):
    """``y += alpha * x`` in place with BLAS over contiguous arrays; False if it can't.

    ``x`` and ``y`` must be C-contiguous arrays of one float dtype and the same
    size, not overlapping.
    """
    if not axpy_accepts(x, y):
        return False
    _state["axpy"][y.dtype](x.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
    return True
