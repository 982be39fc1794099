"""The Embedding layer: looks up a learned vector for every integer id (not in the reference)."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_positive_int, layer_label
from brainstorm.layers._recurrent import check_size
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time

__all__ = ["Embedding", "EmbeddingLayerImpl"]


def Embedding(vocab_size, size, name=None):
    """Create an embedding lookup: ``y[t, b] = W[ids[t, b, 0]]``.

    The input holds integer ids in ``[0, vocab_size)`` stored as floats (as
    class targets are), shape ``('T', 'B', 1)``; it gets no deltas. Ids out
    of range are an error (NumpyHandler raises ``IndexError``; DebugHandler
    names the op). The gradient of ``W`` adds up the output deltas of all
    positions with the same id. Equivalent to a linear FullyConnected layer
    without bias on one-hot inputs, but needs neither the one-hot data nor the
    matrix product.

    Args:
        vocab_size: the number of distinct ids.
        size: the length of the vectors.
        name: the layer's name (default ``'Embedding'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> inp = Input({'default': ('T', 'B', 1), 'targets': ('T', 'B', 1)})
        >>> inp >> Embedding(205, 64) >> Lstm(512) >> out
    """
    label = layer_label(name, "Embedding")
    vocab_size = check_positive_int(vocab_size, "vocab_size", label)
    size = check_size(size, label)
    return ConstructionWrapper.create(
        EmbeddingLayerImpl, name=name, vocab_size=vocab_size, size=size
    )


class EmbeddingLayerImpl(Layer):
    """Implementation of :func:`Embedding`: parameter ``W (vocab_size, size)``."""

    expected_inputs = {"default": StructureTemplate("T", "B", 1)}
    expected_kwargs = {"vocab_size", "size"}
    computes_no_input_deltas_for = ("default",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.vocab_size = check_positive_int(kwargs.get("vocab_size"), "vocab_size", label)
        self.size = check_size(kwargs.get("size"), label)
        outputs = OrderedDict(default=BufferStructure("T", "B", self.size))
        parameters = OrderedDict(W=BufferStructure(self.vocab_size, self.size))
        return outputs, parameters, OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        self.handler.index_rows_mv(
            buffers.parameters.W,
            flatten_time(buffers.inputs.default),
            flatten_time(buffers.outputs.default),
        )

    def backward_pass(self, buffers):
        self.handler.scatter_add_rows_mv(
            flatten_time(buffers.output_deltas.default),
            flatten_time(buffers.inputs.default),
            buffers.gradients.W,
        )
