"""Networks from one-line spec strings such as ``'D.2 F1200 D F1200 D'``.

The grammar is the reference's, read strictly: anything it does not describe
is an error that quotes the spec and marks the offending token, where the
reference silently skipped it.

::

    spec    := { layer }
    layer   := TYPE { arg [ sep ] }          TYPE := one of  F R L B D C P
    arg     := LETTER | NUMBER               LETTER := a-z
    NUMBER  := [+-] digits | [+-] [digits] '.' digits
    sep     := ':' | '/' | '|'

Whitespace may stand anywhere and is otherwise ignored; it only separates two
numbers (``'C32 5'`` = ``'C32:5'``). A number with a decimal point is a float,
otherwise an int.

====  =====================  ===================================================
type  layer                  arguments
====  =====================  ===================================================
F     FullyConnected         ``[act] size`` (act defaults to r)
R     Recurrent              ``[act] size`` (act defaults to t)
L     Lstm                   ``[act] size`` (act defaults to t)
B     BatchNorm              none
D     Dropout                ``[prob]``, written with a decimal point (``D.2``,
                             ``D0.5``); plain ``D`` drops with 0.5
C     Convolution2D          ``[act] num_filters kernel {p padding | s stride}``
P     Pooling2D              ``[m|a] kernel {p padding | s stride}``
====  =====================  ===================================================

Activations: ``l`` linear, ``r`` rel (ReLU), ``s`` sigmoid, ``t`` tanh.
Kernels are square, strides are the same along both axes, padding defaults
to 0 and stride to 1 (also for pooling, as in the reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SpecError",
    "act_funcs",
    "create_layer",
    "create_net_from_spec",
    "parse_spec",
    "trynumber",
]

#: Activation letters of F, R, L and C.
act_funcs = {"l": "linear", "r": "rel", "s": "sigmoid", "t": "tanh"}
#: Pooling letters of P.
pool_types = {"m": "max", "a": "avg"}

SEPARATORS = ":/|"
_NUMBER_CHARS = re.compile(r"[+-]?[0-9.]+")
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?[0-9]*\.[0-9]+\Z")


class SpecError(ValueError):
    """A malformed network spec.

    The message quotes the spec and marks the offending token with carets.

    Attributes:
        spec (str): the spec.
        position (int): index of the offending token in ``spec``.
        reason (str): what is wrong, without the quote.
    """

    def __init__(self, spec, position, reason, length=1):
        self.spec = spec
        self.position = position
        self.reason = reason
        self.length = length
        shown = "".join(" " if ch.isspace() else ch for ch in spec)
        marker = " " * (position + 1) + "^" * max(1, length)
        super().__init__(
            f"Malformed network spec: {reason} (at position {position})\n"
            f"    '{shown}'\n"
            f"    {marker}"
        )

    def __reduce__(self):  # picklable (e.g. from a multiprocessing worker)
        return type(self), (self.spec, self.position, self.reason, self.length)


class SpecArgumentError(ValueError):
    """Bad arguments for one layer letter.

    Attributes:
        index (int | None): index of the offending argument, or None if an
            argument is missing at the end.
    """

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index


# ------------------------------------------------------------------ tokens


@dataclass
class _Token:
    kind: str  # 'type', 'letter', 'number' or 'sep'
    text: str
    position: int
    value: object = None

    @property
    def end(self):
        return self.position + len(self.text)


def trynumber(text):
    """``text`` as an int, else as a float, else unchanged (the reference helper)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _tokenize(spec):
    tokens = []
    i = 0
    while i < len(spec):
        ch = spec[i]
        if ch.isspace():
            i += 1
        elif "A" <= ch <= "Z":
            tokens.append(_Token("type", ch, i))
            i += 1
        elif "a" <= ch <= "z":
            tokens.append(_Token("letter", ch, i, ch))
            i += 1
        elif ch in SEPARATORS:
            tokens.append(_Token("sep", ch, i))
            i += 1
        else:
            match = _NUMBER_CHARS.match(spec, i)
            if match is None:
                raise SpecError(spec, i, f"unexpected character {ch!r}")
            text = match.group()
            if _INT.match(text):
                value = int(text)
            elif _FLOAT.match(text):
                value = float(text)
            else:
                raise SpecError(spec, i, f"malformed number {text!r}", len(text))
            tokens.append(_Token("number", text, i, value))
            i = match.end()
    return tokens


def _group_layers(spec, tokens):
    """Split tokens into ``(type token, [argument tokens])`` per layer."""
    layers = []
    previous = None
    for token in tokens:
        if token.kind == "type":
            if token.text not in _BUILDERS:
                raise SpecError(
                    spec,
                    token.position,
                    f"unknown layer type {token.text!r} (known: {' '.join(_BUILDERS)})",
                )
            layers.append((token, []))
        elif not layers:
            raise SpecError(
                spec,
                token.position,
                f"expected a layer type ({' '.join(_BUILDERS)}) first, got {token.text!r}",
                len(token.text),
            )
        elif token.kind == "sep":
            if previous is None or previous.kind not in ("letter", "number"):
                raise SpecError(
                    spec,
                    token.position,
                    f"unexpected separator {token.text!r}: separators only follow an argument",
                )
        else:
            layers[-1][1].append(token)
        previous = token
    return layers


# ---------------------------------------------------------- argument parsing


class _Arguments:
    """A cursor over the argument values of one layer letter."""

    def __init__(self, letter, args):
        self.letter = letter
        self.name = _BUILDERS[letter][0]
        self.args = list(args)
        self.i = 0

    def peek(self):
        return self.args[self.i] if self.i < len(self.args) else None

    def fail(self, message, index="current"):
        index = self.i if index == "current" else index
        if index is not None and index >= len(self.args):
            index = None
        raise SpecArgumentError(f"{self.letter} ({self.name}): {message}", index)

    def optional_letter(self, table, what):
        arg = self.peek()
        if isinstance(arg, str):
            if arg not in table:
                choices = ", ".join(f"{k} ({v})" for k, v in table.items())
                self.fail(f"unknown {what} {arg!r}; use {choices}")
            self.i += 1
            return table[arg]
        return None

    def integer(self, what, minimum, example):
        arg = self.peek()
        if arg is None:
            self.fail(f"missing {what} (e.g. {example!r})", None)
        if isinstance(arg, str):
            self.fail(f"expected {what} (an integer) here, got the letter {arg!r}")
        if isinstance(arg, bool) or not isinstance(arg, int):
            self.fail(f"{what} must be an integer, got {arg!r}")
        if arg < minimum:
            self.fail(f"{what} must be at least {minimum}, got {arg}")
        self.i += 1
        return arg

    def options(self, names):
        """Trailing ``p<int>`` / ``s<int>`` options; returns {letter: value}."""
        found = {}
        while self.peek() is not None:
            arg = self.peek()
            if not isinstance(arg, str) or arg not in names:
                accepted = " and ".join(f"{k}<{v[0]}>" for k, v in names.items())
                self.fail(
                    f"unexpected argument {arg!r}; after the kernel size only {accepted} follow"
                )
            if arg in found:
                self.fail(f"{names[arg][0]} given twice")
            self.i += 1
            what, minimum = names[arg]
            found[arg] = self.integer(what, minimum, f"{arg}2")
        return found

    def finish(self):
        if self.i < len(self.args):
            self.fail(f"unexpected extra argument {self.args[self.i]!r}")


def _sized(letter, args, default_activation, factory_name):
    a = _Arguments(letter, args)
    activation = a.optional_letter(act_funcs, "activation") or default_activation
    size = a.integer("size", 1, f"{letter}100")
    a.finish()
    return _layer(factory_name)(size, activation=activation)


def _layer(name):
    import brainstorm.layers

    return getattr(brainstorm.layers, name)


_CONV_OPTIONS = {"p": ("padding", 0), "s": ("stride", 1)}


def F(args):
    """FullyConnected from spec arguments ``[act] size`` (default activation rel)."""
    return _sized("F", args, "rel", "FullyConnected")


def R(args):
    """Recurrent from spec arguments ``[act] size`` (default activation tanh)."""
    return _sized("R", args, "tanh", "Recurrent")


def L(args):
    """Lstm from spec arguments ``[act] size`` (default activation tanh)."""
    return _sized("L", args, "tanh", "Lstm")


def B(args):
    """BatchNorm; takes no spec arguments."""
    a = _Arguments("B", args)
    a.finish()
    return _layer("BatchNorm")()


def D(args):
    """Dropout from the spec argument ``[prob]`` (a decimal number, default 0.5)."""
    a = _Arguments("D", args)
    arg = a.peek()
    if arg is None:
        return _layer("Dropout")()
    if isinstance(arg, str) or not isinstance(arg, float):
        a.fail(f"the dropout probability must be a decimal number such as .5 or 0.2, got {arg!r}")
    if not 0.0 <= arg < 1.0:
        a.fail(f"the dropout probability must be in [0, 1), got {arg!r}")
    a.i += 1
    a.finish()
    return _layer("Dropout")(drop_prob=arg)


def C(args):
    """Convolution2D from ``[act] num_filters kernel {p padding | s stride}``."""
    a = _Arguments("C", args)
    activation = a.optional_letter(act_funcs, "activation") or "rel"
    num_filters = a.integer("num_filters", 1, "C32:3")
    kernel = a.integer("kernel size", 1, "C32:3")
    options = a.options(_CONV_OPTIONS)
    stride = options.get("s", 1)
    return _layer("Convolution2D")(
        num_filters,
        kernel_size=(kernel, kernel),
        stride=(stride, stride),
        padding=options.get("p", 0),
        activation=activation,
    )


def P(args):
    """Pooling2D from ``[m|a] kernel {p padding | s stride}`` (default max)."""
    a = _Arguments("P", args)
    pool_type = a.optional_letter(pool_types, "pooling type") or "max"
    kernel = a.integer("kernel size", 1, "P3s2")
    options = a.options(_CONV_OPTIONS)
    stride = options.get("s", 1)
    return _layer("Pooling2D")(
        kernel_size=(kernel, kernel),
        type=pool_type,
        stride=(stride, stride),
        padding=options.get("p", 0),
    )


_BUILDERS = {
    "F": ("FullyConnected", F),
    "R": ("Recurrent", R),
    "L": ("Lstm", L),
    "B": ("BatchNorm", B),
    "D": ("Dropout", D),
    "C": ("Convolution2D", C),
    "P": ("Pooling2D", P),
}


def create_layer(layer_type, args):
    """Create the layer for one spec letter.

    Args:
        layer_type (str): one of ``F R L B D C P``.
        args (list): the argument values: single lowercase letters and numbers.

    Returns:
        ConstructionWrapper: the new layer.

    Raises:
        ValueError: for an unknown letter or bad arguments.
    """
    if layer_type not in _BUILDERS:
        raise ValueError(f"Unknown layer type {layer_type!r} (known: {' '.join(_BUILDERS)})")
    return _BUILDERS[layer_type][1](args)


def parse_spec(spec):
    """Create the layers of a spec string, in order (not yet connected).

    Args:
        spec (str): the spec, e.g. ``'C32:5p2 P3s2 F64'``.

    Returns:
        list[ConstructionWrapper]: one layer per type letter.

    Raises:
        SpecError: (a ``ValueError``) for a malformed spec; the message quotes
            the spec and marks the offending token.
        TypeError: if ``spec`` is not a string.
    """
    if not isinstance(spec, str):
        raise TypeError(f"The network spec must be a string, got {type(spec).__name__}")
    from brainstorm.utils import ValidationError

    tokens = _tokenize(spec)
    created = []
    for type_token, arg_tokens in _group_layers(spec, tokens):
        values = [t.value for t in arg_tokens]
        try:
            created.append(create_layer(type_token.text, values))
        except SpecArgumentError as err:
            if err.index is None:  # missing argument: point just after the layer
                end = arg_tokens[-1].end if arg_tokens else type_token.end
                raise SpecError(spec, end, str(err)) from None
            bad = arg_tokens[err.index]
            raise SpecError(spec, bad.position, str(err), len(bad.text)) from None
        except (ValueError, ValidationError) as err:  # rejected by the layer itself
            end = arg_tokens[-1].end if arg_tokens else type_token.end
            raise SpecError(
                spec, type_token.position, str(err), end - type_token.position
            ) from None
    return created


def create_net_from_spec(
    task_type,
    in_shape,
    out_shape,
    spec,
    data_name="default",
    targets_name="targets",
    mask_name=None,
    use_conv=None,
):
    """Create a complete network from a spec line like ``"F50 F20 F50"``.

    Capital letters specify the layer type and are followed by arguments to
    the layer (see :mod:`brainstorm.tools.spec` for the full grammar):

    * ``F`` FullyConnected, ``R`` Recurrent, ``L`` Lstm: ``[act] size``
    * ``B`` BatchNorm: no arguments
    * ``D`` Dropout: optional probability written as a decimal (``D.2``)
    * ``C`` Convolution2D: ``[act] num_filters:kernel`` then ``p<padding>``
      and/or ``s<stride>`` (``'Cs32:3p1s2'``)
    * ``P`` Pooling2D: ``[m|a] kernel`` then ``p<padding>`` and/or
      ``s<stride>`` (``'Pa2s2'``)

    The optional activation letter is one of ``l r s t`` ('linear', 'rel',
    'sigmoid', 'tanh'). Whitespace is allowed everywhere and ignored. The
    layers are chained between the Input and the output layers of
    :func:`~brainstorm.tools.get_in_out_layers`; their names are the automatic
    ones (``FullyConnected_1``, ``Dropout_2``, ...).

    Examples:
        The mnist_pi example can be expressed like this:

        >>> net = create_net_from_spec('classification', 784, 10,
        ...                            'D.2 F1200 D F1200 D')

        The cifar10_cnn example (images are NHWC, so the input shape is
        ``(32, 32, 3)``) can be shortened like this:

        >>> net = create_net_from_spec(
        ...     'classification', (32, 32, 3), 10,
        ...     'C32:5p2 P3s2 C32:5p2 P3s2 C64:5p2 P3s2 F64')

    Args:
        task_type (str): one of 'classification', 'regression', 'multi-label'.
        in_shape (int or tuple[int]): shape of the input data.
        out_shape (int or tuple[int]): output shape / number of classes.
        spec (str): a line describing the network as explained above.
        data_name (Optional[str]): name of the input data. Defaults to 'default'.
        targets_name (Optional[str]): name of the targets. Defaults to 'targets'.
        mask_name (Optional[str]): name of a mask input, for injecting the
            error only at some time steps. Defaults to None (no mask).
        use_conv (Optional[bool]): make the projection layer of a 3-D
            (image-shaped) output a 1x1 convolution (True) or fully connected
            (False); None decides from the output shape. A 1-D ``out_shape``
            always gets a fully connected projection.

    Returns:
        brainstorm.structure.network.Network: the network, with
        ``output_name = 'Output.outputs.predictions'``, initialized with
        ``DenseSqrtFanInOut(activation)`` for every layer that has an
        activation function, BatchNorm layers with ``gamma = 1`` and
        ``beta = 0`` (the reference drew gamma from the default Gaussian, so
        it started near 0), and ``Gaussian()`` as default and fallback (the
        latter initializes the biases).

    Raises:
        SpecError: (a ``ValueError``) for a malformed spec.
        ValueError: for an unknown task type.
    """
    from brainstorm.initializers import DenseSqrtFanInOut, Gaussian
    from brainstorm.structure.network import Network
    from brainstorm.tools.network_building import get_in_out_layers

    hidden = parse_spec(spec)  # a malformed spec fails before anything is wired
    inp, projection = get_in_out_layers(
        task_type,
        in_shape,
        out_shape,
        data_name=data_name,
        targets_name=targets_name,
        mask_name=mask_name,
        use_conv=use_conv,
    )
    current = inp
    for layer in hidden:
        current = current >> layer
    current >> projection
    net = Network.from_layer(projection)
    net.output_name = "Output.outputs.predictions"

    init = {}
    for name, layer in net.layers.items():
        activation = getattr(layer, "activation", None)
        if layer.parameter_shapes and activation in act_funcs.values():
            init[name] = DenseSqrtFanInOut(activation)
        elif layer.type_name == "BatchNorm":
            init[name] = {"gamma": 1.0, "beta": 0.0}
    init["default"] = Gaussian()
    init["fallback"] = Gaussian()
    net.initialize(init)
    return net
