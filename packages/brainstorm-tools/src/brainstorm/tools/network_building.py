"""Input and output layers for the common tasks, ready to be wired."""

from __future__ import annotations

import numbers

__all__ = ["get_in_out_layers", "TASK_TYPES"]

#: task type -> the output layer computing its loss.
TASK_TYPES = {
    "classification": "SoftmaxCE",
    "multi-label": "SigmoidCE",
    "regression": "SquaredError",
}


def _as_shape(shape, what):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{what} must be an int or a tuple of ints, got {shape!r}") from None
    if not shape or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(
            f"{what} must be a positive int or a tuple of positive ints, got {shape!r}"
        )
    return tuple(int(s) for s in shape)


def get_in_out_layers(
    task_type,
    in_shape,
    out_shape,
    data_name="default",
    targets_name="targets",
    projection_name=None,
    outlayer_name=None,
    mask_name=None,
    use_conv=None,
):
    """Prepare input and output layers for building a network.

    This is a helper function for quickly building networks. It returns an
    ``Input`` layer and a projection layer, a ``FullyConnected`` or
    ``Convolution2D`` layer (linear) depending on the shape of the targets.
    The projection is already connected to the output layer, which computes
    the loss for the ``task_type`` against the targets from the input layer:

    * ``'classification'``: ``SoftmaxCE``; the targets are class indices,
      shaped ``out_shape[:-1] + (1,)``. For single-label classification.
    * ``'multi-label'``: ``SigmoidCE``; binary targets shaped ``out_shape``.
    * ``'regression'``: ``SquaredError``; targets shaped ``out_shape``.

    The ``loss`` output goes to a ``Loss`` layer, through a ``Mask`` layer fed
    by the input ``mask_name`` if one is given (to inject the error only at
    some time steps of sequential data).

    Note:
        The projection layer has parameters, so initialize the network after
        creating it.

    Example:
        >>> from brainstorm import tools, Network, layers
        >>> inp, out = tools.get_in_out_layers('classification', 784, 10)
        >>> net = Network.from_layer(inp >> layers.FullyConnected(1000) >> out)

    Args:
        task_type (str): one of 'classification', 'regression', 'multi-label'.
        in_shape (int or tuple[int]): shape of the input data (features only).
        out_shape (int or tuple[int]): shape of the network output.
        data_name (Optional[str]): name of the input data provided by a data
            iterator. Defaults to 'default'.
        targets_name (Optional[str]): name of the target data provided by a
            data iterator. Defaults to 'targets'.
        projection_name (Optional[str]): name of the projection layer; defaults
            to ``outlayer_name + '_projection'`` ('Output_projection').
        outlayer_name (Optional[str]): name of the output layer; defaults to
            'Output'.
        mask_name (Optional[str]): name of the mask data provided by a data
            iterator, shaped ``('T', 'B', 1)``. Defaults to None (no mask).
        use_conv (Optional[bool]): True for a 1x1 ``Convolution2D`` projection
            of image-shaped (3-D) outputs, False for ``FullyConnected``; None
            picks convolution for 3-D outputs. A 1-D ``out_shape`` always gets a
            ``FullyConnected`` projection (as in the reference).

    Returns:
        tuple[ConstructionWrapper, ConstructionWrapper]: the ``Input`` layer
        (with its output ``data_name`` selected, so ``inp >> layer`` feeds it
        the data) and the projection layer.

    Raises:
        ValueError: for an unknown task type, a bad shape, an output shape of
            2 or more than 3 dimensions with ``use_conv=None``, or clashing data
            names.
    """
    import brainstorm.layers as layers

    if task_type not in TASK_TYPES:
        raise ValueError(
            f"Unknown task type {task_type!r}; use one of {', '.join(map(repr, TASK_TYPES))}"
        )
    in_shape = _as_shape(in_shape, "in_shape")
    out_shape = _as_shape(out_shape, "out_shape")
    names = [n for n in (data_name, targets_name, mask_name) if n is not None]
    if len(set(names)) != len(names):
        raise ValueError(
            f"data_name, targets_name and mask_name must differ, got {data_name!r}, "
            f"{targets_name!r}, {mask_name!r}"
        )
    outlayer_name = outlayer_name or "Output"
    projection_name = projection_name or outlayer_name + "_projection"

    if len(out_shape) == 1 or use_conv is False:
        size = out_shape if len(out_shape) > 1 else out_shape[0]
        projection = layers.FullyConnected(size, activation="linear", name=projection_name)
    elif len(out_shape) == 3 or use_conv is True:
        projection = layers.Convolution2D(
            out_shape[-1], kernel_size=(1, 1), activation="linear", name=projection_name
        )
    else:
        raise ValueError(
            f"Cannot choose a projection for the {len(out_shape)}-D output shape {out_shape}; "
            f"pass use_conv=False (fully connected) or use_conv=True (1x1 convolution)"
        )

    out_layer = getattr(layers, TASK_TYPES[task_type])(name=outlayer_name)
    projection >> "default" - out_layer

    t_shape = out_shape[:-1] + (1,) if task_type == "classification" else out_shape
    input_shapes = {data_name: ("T", "B") + in_shape, targets_name: ("T", "B") + t_shape}
    if mask_name is not None:
        input_shapes[mask_name] = ("T", "B", 1)
    inp = layers.Input(input_shapes)
    inp - targets_name >> "targets" - out_layer
    if mask_name is None:
        out_layer - "loss" >> layers.Loss()
    else:
        mask_layer = layers.Mask()
        out_layer - "loss" >> mask_layer >> layers.Loss()
        inp - mask_name >> "mask" - mask_layer
    # `inp >> layer` then connects the data (not just when it is called 'default')
    return inp - data_name, projection
