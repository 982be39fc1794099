"""The GPU behind PyCudaHandler: pycuda for memory and kernels, nvmath-python for cuBLAS.

Imported only when a :class:`~brainstorm.handlers.cuda.PyCudaHandler` is
constructed. Every way this can fail (no pycuda, no driver, no device, no
nvmath-python or cuBLAS, no nvcc to compile the kernels) becomes one
:class:`~brainstorm.handlers.cuda.CudaUnavailableError` naming the missing piece.

The kernels are compiled from ``kernels/*.cu`` with pycuda's ``SourceModule``
when the device is created: pycuda runs nvcc for the GPU that is actually
present (and caches the result), so no binary for a fixed list of
architectures is shipped, and the sources in the wheel are the ones the CPU
emulation tests.
"""

from __future__ import annotations

import weakref

import numpy as np

from brainstorm.handlers.cuda import _kernels
from brainstorm.handlers.cuda._views import StridedViews
from brainstorm.handlers.cuda.handler import _INSTALL_HINT, CudaUnavailableError

__all__ = ["PyCudaDevice"]


def _unavailable(what, error=None):
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return CudaUnavailableError(f"{what}{detail}. {_INSTALL_HINT}")


def _load_cuda():
    """Import pycuda (creating its context) and nvmath's cuBLAS bindings, or raise."""
    try:
        import pycuda  # noqa: F401
    except ImportError as error:
        raise _unavailable("pycuda is not installed", error) from error
    try:
        import pycuda.driver as driver
    except (ImportError, OSError) as error:
        raise _unavailable(
            "pycuda cannot load the NVIDIA driver library libcuda (is the driver installed?)",
            error,
        ) from error
    try:
        driver.init()
        count = driver.Device.count()
    except Exception as error:
        raise _unavailable("the NVIDIA driver failed to initialise", error) from error
    if count == 0:
        raise _unavailable("the NVIDIA driver found no CUDA device")
    try:
        import nvmath.bindings.cublas as cublas
    except ImportError as error:
        raise _unavailable("nvmath-python (cuBLAS bindings) is not installed", error) from error
    try:
        import pycuda.autoinit  # noqa: F401  (creates the context, pops it at exit)
        import pycuda.gpuarray as gpuarray
        import pycuda.tools as tools
        from pycuda.compiler import SourceModule
    except Exception as error:
        raise _unavailable("pycuda could not create a CUDA context", error) from error
    return driver, gpuarray, tools, SourceModule, cublas


_ARRAY_CLASSES = {}


def _array_class(gpuarray):
    """``CudaArray``: pycuda's GPUArray with NumPy's views (strided reshape included)."""
    if gpuarray.GPUArray in _ARRAY_CLASSES:
        return _ARRAY_CLASSES[gpuarray.GPUArray]

    class CudaArray(StridedViews, gpuarray.GPUArray):
        """A pycuda ``GPUArray`` whose indexing and ``reshape`` return views as NumPy's do."""

        @property
        def ptr(self):
            """The device address of the first element (0 for an empty array)."""
            return 0 if self.gpudata is None else int(self.gpudata)

        def _view(self, shape, strides, offset):
            if int(np.prod(shape)) == 0:
                return CudaArray(shape, self.dtype, allocator=self.allocator)
            return CudaArray(
                shape,
                self.dtype,
                allocator=self.allocator,
                base=self,
                gpudata=self.ptr + offset,
                strides=strides,
            )

    _ARRAY_CLASSES[gpuarray.GPUArray] = CudaArray
    return CudaArray


def _destroy_cublas(cublas, handle):
    try:
        cublas.destroy(handle)
    except Exception:  # the context may be gone at interpreter exit
        pass


class PyCudaDevice:
    """The current CUDA device, as the handler's device interface.

    Raises:
        CudaUnavailableError: see the module docstring.
    """

    def __init__(self):
        driver, gpuarray, tools, source_module, cublas = _load_cuda()
        self._driver = driver
        self._cublas = cublas
        self._pool = tools.DeviceMemoryPool()
        self.array_type = _array_class(gpuarray)
        self.name = driver.Context.get_device().name()
        self._modules, self._functions = [], {}
        for path in _kernels.kernel_files():
            try:
                module = source_module(
                    path.read_text(),
                    no_extern_c=True,
                    include_dirs=[str(_kernels.KERNEL_DIR)],
                )
            except Exception as error:
                raise _unavailable(
                    f"pycuda could not compile {path.name} (it runs nvcc from the CUDA toolkit, "
                    "which must be on the PATH)",
                    error,
                ) from error
            self._modules.append(module)
            for kernel in _kernels.parse_kernels(path):
                function = module.get_function(kernel.name)
                function.prepare(kernel.arg_format)
                self._functions[kernel.name] = function
        try:
            self.cublas_handle = cublas.create()
        except Exception as error:
            raise _unavailable("cuBLAS could not be loaded", error) from error
        weakref.finalize(self, _destroy_cublas, cublas, self.cublas_handle)

    def allocate(self, shape):
        """A new zero-filled C-contiguous float32 array."""
        array = self.array_type(shape, np.float32, allocator=self._pool.allocate)
        if array.size:
            self._driver.memset_d32(array.gpudata, 0, array.size)
        return array

    def upload(self, ptr, host):
        """Copy a C-contiguous float32 host array to device address ``ptr``."""
        self._driver.memcpy_htod(ptr, host)

    def download(self, host, ptr):
        """Copy ``host.nbytes`` from device address ``ptr`` into a C-contiguous host array."""
        self._driver.memcpy_dtoh(host, ptr)

    def launch(self, name, grid, block, args):
        """Launch kernel ``name`` (arguments in the order of its C signature)."""
        self._functions[name].prepared_call(grid, block, *args)

    def sgemm(self, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """cuBLAS ``sgemm`` on device pointers: C = alpha op(A) op(B) + beta C (column-major)."""
        scalars = np.array([alpha, beta], dtype=np.float32)  # host pointer mode: read at call
        address = scalars.ctypes.data
        self._cublas.sgemm(
            self.cublas_handle,
            transa,
            transb,
            m,
            n,
            k,
            address,
            a,
            lda,
            b,
            ldb,
            address + 4,
            c,
            ldc,
        )
