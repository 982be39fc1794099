"""Data preparation commands: the data sets of the examples, as brainstorm HDF5 files.

===========================  =======================  ====================
command                      reads                    writes
===========================  =======================  ====================
brainstorm-prepare-mnist     the four IDX files       ``MNIST.hdf5``
brainstorm-prepare-cifar10   cifar-10-binary.tar.gz   ``CIFAR-10.hdf5``
brainstorm-prepare-cifar100  cifar-100-binary.tar.gz  ``CIFAR-100.hdf5``
brainstorm-prepare-enwik8    enwik8.zip               ``HutterPrize.hdf5``
===========================  =======================  ====================

Each reads the files from ``--data-dir`` (default ``$BRAINSTORM_DATA_DIR``, or
the current folder), downloads them there when they are missing and the
network allows (``--no-download`` to forbid it), writes the result atomically,
shows its progress (``--quiet`` to hide it) and refuses to overwrite an
existing file unless given ``--force``. The layouts are described in the
modules :mod:`~brainstorm.tools.prepare.mnist`,
:mod:`~brainstorm.tools.prepare.cifar` and :mod:`~brainstorm.tools.prepare.enwik8`
and in each file's ``description`` attribute.
"""
