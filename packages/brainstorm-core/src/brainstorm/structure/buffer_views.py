"""BufferView: named, nested access to the arrays of a network."""

from __future__ import annotations

__all__ = ["BufferView"]

# where a view keeps its own data in its __dict__: keys that are not identifiers,
# so no child name can overwrite them
_NAMES, _INDEX, _FULL = "#names", "#index", "#full"


class _Method:
    """A method of BufferView that a child of the same name does not hide.

    Children live in the instance ``__dict__`` (fast attribute access), which
    hides plain methods; this data descriptor wins over the instance
    ``__dict__``, so ``view.items()`` works even with a child called ``items``
    (reachable as ``view['items']``).
    """

    def __init__(self, function):
        self.function = function
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __get__(self, view, owner=None):
        return self.function if view is None else self.function.__get__(view, owner)

    def __set__(self, view, value):
        raise AttributeError(f"BufferView.{self.__name__} can not be replaced")


class BufferView(list):
    """A list of buffers (arrays or nested views) that also has names.

    Children are reachable by index (``view[0]``), by name (``view['W']``), by
    attribute (``view.W``) and by dotted path (``view['Layer.parameters.W']``).

    Args:
        buffer_names: names of the children, in order.
        buffers: the children (arrays or BufferViews).
        full_buffer: optional array holding all children side by side, in
            order (for a layer's ``parameters``, ``gradients`` and ``states``:
            the 1-D slice of the flat vector). Layers may use it to operate on
            several consecutive parameters at once (e.g. one GEMM for all gates).
    """

    def __init__(self, buffer_names, buffers, full_buffer=None):
        super().__init__(buffers)
        if len(buffer_names) != len(buffers):
            raise ValueError("BufferView needs exactly one name per buffer")
        names = tuple(buffer_names)
        # Children as instance attributes: fast to reach, and they win over list
        # methods of the same name (a buffer called 'index' or 'copy'), but not
        # over the view's own keys/values/items/full_buffer (see _Method).
        self.__dict__.update(zip(names, buffers))
        self.__dict__[_NAMES] = names
        self.__dict__[_INDEX] = {name: i for i, name in enumerate(names)}
        self.__dict__[_FULL] = full_buffer

    @property
    def _buffer_names(self):
        return self.__dict__[_NAMES]

    @property
    def _keys(self):
        return self.__dict__[_INDEX]

    @property
    def full_buffer(self):
        """The array holding all children side by side, or None."""
        return self.__dict__[_FULL]

    @_Method
    def keys(self):
        """The names of the children, in order."""
        return list(self._buffer_names)

    @_Method
    def values(self):
        """The children, in order."""
        return list(self)

    @_Method
    def items(self):
        """(name, child) pairs, in order."""
        return list(zip(self._buffer_names, self))

    def __contains__(self, item):
        if isinstance(item, str):
            return item in self._keys
        return any(item is child for child in self)

    def __getitem__(self, item):
        if isinstance(item, str):
            head, _, rest = item.partition(".")
            if head not in self._keys:
                raise KeyError(
                    f"{item!r}: no entry {head!r}; available: {list(self._buffer_names)}"
                )
            child = super().__getitem__(self._keys[head])
            if not rest:
                return child
            if not isinstance(child, BufferView):
                raise KeyError(f"{item!r}: {head!r} is an array, it has no entry {rest!r}")
            try:
                return child[rest]
            except KeyError as err:
                raise KeyError(f"{head}.{err.args[0]}") from None
        return super().__getitem__(item)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"BufferView has no entry {name!r}; available: {list(self._buffer_names)}"
        )

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._buffer_names))

    def __repr__(self):
        return "BufferView(" + ", ".join(self._buffer_names) + ")"

    # list equality would compare arrays element-wise; views compare by identity
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__
