"""PyCudaHandler: Brainstorm on NVIDIA GPUs.

Importing this package is cheap and safe: it imports neither pycuda nor
nvmath-python and does not touch a GPU. Only constructing a
:class:`PyCudaHandler` does, and without pycuda, the NVIDIA driver or a GPU it
raises :class:`CudaUnavailableError` saying which is missing.

Example:
    >>> from brainstorm.handlers import PyCudaHandler
    >>> net.set_handler(PyCudaHandler())  # doctest: +SKIP
"""

from brainstorm.handlers.cuda.handler import CudaUnavailableError, PyCudaHandler

__all__ = ["PyCudaHandler", "CudaUnavailableError"]
