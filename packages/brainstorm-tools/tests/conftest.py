"""Small data files in the original formats, generated for the data command tests."""

import gzip
import io
import struct
import tarfile
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest


def idx_bytes(array):
    """An IDX file (unsigned bytes) holding ``array``."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(folder, n_train=12, n_test=5, compress=True, seed=0):
    """The four MNIST IDX files; returns the arrays written."""
    rng = np.random.RandomState(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.randint(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.randint(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if compress:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


def cifar_records(images, *labels):
    """Binary CIFAR records: label byte(s), then the image as R, G, B planes of 32x32."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # NHWC -> N, C*H*W
    columns = [np.asarray(lab, dtype=np.uint8)[:, None] for lab in labels]
    return np.hstack(columns + [planes]).astype(np.uint8).tobytes()


def add_member(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_cifar10(path, per_batch=3, n_test=4, seed=0):
    """A tiny cifar-10-binary.tar.gz; returns (train images NHWC, labels, test images, labels)."""
    rng = np.random.RandomState(seed)
    train_x = rng.randint(0, 256, (5 * per_batch, 32, 32, 3)).astype(np.uint8)
    train_t = rng.randint(0, 10, 5 * per_batch).astype(np.uint8)
    test_x = rng.randint(0, 256, (n_test, 32, 32, 3)).astype(np.uint8)
    test_t = rng.randint(0, 10, n_test).astype(np.uint8)
    with tarfile.open(path, "w:gz") as archive:
        for i in range(5):
            part = slice(i * per_batch, (i + 1) * per_batch)
            add_member(
                archive,
                f"cifar-10-batches-bin/data_batch_{i + 1}.bin",
                cifar_records(train_x[part], train_t[part]),
            )
        add_member(archive, "cifar-10-batches-bin/test_batch.bin", cifar_records(test_x, test_t))
        add_member(archive, "cifar-10-batches-bin/batches.meta.txt", b"airplane\n")
    return train_x, train_t, test_x, test_t


def write_cifar100(path, n_train=15, n_test=4, seed=1):
    """A tiny cifar-100-binary.tar.gz; returns (train images, fine labels, test images, fine)."""
    rng = np.random.RandomState(seed)
    train_x = rng.randint(0, 256, (n_train, 32, 32, 3)).astype(np.uint8)
    test_x = rng.randint(0, 256, (n_test, 32, 32, 3)).astype(np.uint8)
    train_fine = rng.randint(20, 100, n_train).astype(np.uint8)
    test_fine = rng.randint(20, 100, n_test).astype(np.uint8)
    with tarfile.open(path, "w:gz") as archive:
        # the coarse labels (< 20) come first and must not be used
        add_member(
            archive,
            "cifar-100-binary/train.bin",
            cifar_records(train_x, train_fine // 5, train_fine),
        )
        add_member(
            archive, "cifar-100-binary/test.bin", cifar_records(test_x, test_fine // 5, test_fine)
        )
    return train_x, train_fine, test_x, test_fine


def write_enwik8(path, text):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", text)


@pytest.fixture(scope="session")
def make():
    """The generators above, for tests (conftest cannot be imported in importlib mode)."""
    return SimpleNamespace(
        idx_bytes=idx_bytes,
        mnist=write_mnist,
        cifar10=write_cifar10,
        cifar100=write_cifar100,
        enwik8=write_enwik8,
        add_member=add_member,
    )
