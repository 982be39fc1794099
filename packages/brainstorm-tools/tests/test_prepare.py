"""The data preparation commands, on small files generated in the original formats.

No test touches the network: downloads are tested with file:// URLs and, for
connections that break off, a server on the loopback interface.
"""

import contextlib
import os
import socket
import subprocess
import sys
import tarfile
import threading
from importlib import metadata

import h5py
import numpy as np
import pytest

from brainstorm.tools.prepare import _common, cifar, enwik8, mnist

QUIET = ["--quiet", "--no-download"]


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_all(path):
    """{dataset path: array} and the file attributes of an HDF5 file."""
    data = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: data.update({name: obj[()]}) if hasattr(obj, "dtype") else None
        )
        attrs = dict(f.attrs)
    return data, attrs


# ------------------------------------------------------------------------------- MNIST


def run_mnist(source, *extra):
    return mnist.main(["--data-dir", str(source), "--validation-size", "4", *QUIET, *extra])


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_round_trip(tmp_path, make, compress):
    arrays = make.mnist(tmp_path, n_train=12, n_test=5, compress=compress)
    assert run_mnist(tmp_path) == 0
    data, attrs = read_all(tmp_path / "MNIST.hdf5")
    images = arrays["train-images-idx3-ubyte"]
    labels = arrays["train-labels-idx1-ubyte"]
    test_images = arrays["t10k-images-idx3-ubyte"]
    test_labels = arrays["t10k-labels-idx1-ubyte"]
    expected = {
        "normalized_split/training": (images[:8], labels[:8]),
        "normalized_split/validation": (images[8:], labels[8:]),
        "normalized_split/test": (test_images, test_labels),
        "normalized_full/training": (images, labels),
        "normalized_full/test": (test_images, test_labels),
    }
    assert set(data) == {f"{group}/{name}" for group in expected for name in ("default", "targets")}
    for group, (x, t) in expected.items():
        default, targets = data[f"{group}/default"], data[f"{group}/targets"]
        n = len(x)
        assert default.shape == (1, n, 28, 28, 1) and default.dtype == np.float32
        assert targets.shape == (1, n, 1) and targets.dtype == np.int64
        np.testing.assert_array_equal(default[0, :, :, :, 0], x.astype(np.float32) / 255)
        np.testing.assert_array_equal(targets[0, :, 0], t)
    assert data["normalized_full/training/default"].max() <= 1.0
    assert data["normalized_full/training/default"].min() >= 0.0
    description = text(attrs["description"])
    assert "normalized_split" in description and "dividing all pixel values by 255" in description
    assert "first 8" in description


def test_mnist_defaults_are_those_of_the_reference():
    args = mnist.build_parser().parse_args([])
    assert args.validation_size == 10000
    assert mnist.OUTPUT_NAME == "MNIST.hdf5"


def test_mnist_source_output_and_environment(tmp_path, make, monkeypatch):
    make.mnist(tmp_path / "downloads")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("BRAINSTORM_DATA_DIR", str(out))
    args = ["--source", str(tmp_path / "downloads"), "--validation-size", "2", *QUIET]
    assert mnist.main(args) == 0
    assert (out / "MNIST.hdf5").is_file()
    assert mnist.main([*args, "--output", str(tmp_path / "elsewhere.hdf5")]) == 0
    with h5py.File(tmp_path / "elsewhere.hdf5", "r") as f:
        assert f["normalized_split/validation/default"].shape == (1, 2, 28, 28, 1)


def test_refuses_to_overwrite_without_force(tmp_path, make, capsys):
    make.mnist(tmp_path)
    target = tmp_path / "MNIST.hdf5"
    target.write_bytes(b"an older file")
    assert run_mnist(tmp_path) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and str(target) in err
    assert target.read_bytes() == b"an older file"
    assert run_mnist(tmp_path, "--force") == 0
    assert h5py.is_hdf5(target)


def test_missing_files_without_download(tmp_path, capsys):
    assert mnist.main(["--data-dir", str(tmp_path), *QUIET]) == 1
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz not found" in err
    assert "put it at" in err and str(tmp_path) in err
    assert mnist.MIRRORS[0] in err
    assert not os.listdir(tmp_path)


def test_download_from_mirrors(tmp_path, make, monkeypatch):
    # file:// URLs stand in for the web: the first mirror lacks the files
    make.mnist(tmp_path / "mirror")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(
        mnist, "MIRRORS", [empty.as_uri() + "/", (tmp_path / "mirror").as_uri() + "/"]
    )
    data_dir = tmp_path / "data"
    code = mnist.main(["--data-dir", str(data_dir), "--validation-size", "4", "--quiet"])
    assert code == 0
    assert sorted(os.listdir(data_dir)) == sorted(
        ["MNIST.hdf5", *[name for pair in mnist.FILES.values() for name in pair]]
    )
    for name in os.listdir(data_dir):
        if name.endswith(".gz"):
            assert (data_dir / name).read_bytes() == (tmp_path / "mirror" / name).read_bytes()


def test_download_into_a_new_data_dir_with_the_output_elsewhere(tmp_path, make, monkeypatch):
    make.mnist(tmp_path / "mirror")
    monkeypatch.setattr(mnist, "MIRRORS", [(tmp_path / "mirror").as_uri() + "/"])
    data_dir, output = tmp_path / "new" / "data", tmp_path / "MNIST.hdf5"
    args = ["--data-dir", str(data_dir), "--output", str(output), "--validation-size", "4"]
    assert mnist.main([*args, "--quiet"]) == 0
    assert output.exists() and len(os.listdir(data_dir)) == 4


@contextlib.contextmanager
def loopback_server(answer):
    """A server on 127.0.0.1 that sends the bytes ``answer`` to every request and
    closes the connection; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(5)

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.parametrize(
    "answer",
    [
        # 500 of the 1000 announced bytes: the reading just ends early
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 500,
        # a chunked answer cut off inside a chunk: http.client raises IncompleteRead
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"100\r\n" + b"x" * 50,
    ],
    ids=["content-length", "chunked"],
)
def test_a_broken_off_download_is_not_kept_and_the_next_mirror_is_tried(tmp_path, answer):
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    destination = tmp_path / "data" / "archive.zip"
    with loopback_server(answer) as broken, loopback_server(good) as working:
        with pytest.raises(_common.PreparationError) as failure:
            _common.download([broken + "archive.zip"], str(destination), quiet=True)
        assert broken + "archive.zip" in str(failure.value)
        assert os.listdir(tmp_path / "data") == []  # nothing kept, no temporary left
        urls = [broken + "archive.zip", working + "archive.zip"]
        assert _common.download(urls, str(destination), quiet=True) == str(destination)
    assert destination.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "data") == ["archive.zip"]


def test_download_failure_tells_where_to_put_the_files(tmp_path, monkeypatch, capsys):
    nowhere = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(mnist, "MIRRORS", [nowhere])
    assert mnist.main(["--data-dir", str(tmp_path / "data"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Could not download train-images-idx3-ubyte.gz" in err
    assert nowhere + "train-images-idx3-ubyte.gz" in err
    assert "put it at " + str(tmp_path / "data" / "train-images-idx3-ubyte.gz") in err
    assert os.listdir(tmp_path / "data") == []  # no partial download left


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("train-labels-idx1-ubyte.gz", b"\x1f\x8b\x08garbage", "Cannot read"),
        ("train-labels-idx1-ubyte", b"\x00\x00\x08", "not an IDX file"),
        ("train-labels-idx1-ubyte", b"PK\x03\x04", "not an IDX file"),
        ("train-labels-idx1-ubyte", b"\x00\x00\x08\x03\x00\x00\x00\x0c", "incomplete header"),
        (
            "train-labels-idx1-ubyte",
            b"\x00\x00\x08\x01\x00\x00\x00\x0c" + b"\x01" * 11,
            "truncated or corrupt",
        ),
    ],
)
def test_corrupt_idx_files(tmp_path, make, capsys, name, content, message):
    make.mnist(tmp_path, compress=False)
    (tmp_path / name).write_bytes(content)
    assert run_mnist(tmp_path) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "MNIST.hdf5").exists()


def test_idx_header_announcing_more_than_any_file_holds(tmp_path, make, capsys):
    # 65536**4 bytes: the size must not wrap around to 0 and match an empty payload
    make.mnist(tmp_path, compress=False)
    header = b"\x00\x00\x08\x04" + b"\x00\x01\x00\x00" * 4
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header)
    assert run_mnist(tmp_path) == 1
    assert "truncated or corrupt" in capsys.readouterr().err


def _damaged(data, start, stop):
    """``data`` with the bytes in [start, stop) inverted."""
    damaged = bytearray(data)
    for i in range(start, min(stop, len(damaged))):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def test_damaged_compressed_files_give_a_clean_error(tmp_path, make, capsys):
    import gzip
    import io
    import zipfile

    make.mnist(tmp_path / "mnist", compress=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(
        _damaged(gzip.compress(images.read_bytes()), 10, 40)
    )
    images.unlink()
    assert run_mnist(tmp_path / "mnist") == 1
    assert "Cannot read" in capsys.readouterr().err

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        cifar10 = cifar.DATASETS["CIFAR-10"]
        for name in [member for names in cifar10.members.values() for member in names]:
            data = np.random.RandomState(0).randint(0, 10, 3073 * 2).astype(np.uint8).tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    good = buffer.getvalue()
    (tmp_path / "c10").mkdir()
    (tmp_path / "c10" / cifar10.archive).write_bytes(
        _damaged(good, len(good) // 2, len(good) // 2 + 50)
    )
    assert cifar.main_cifar10(["--data-dir", str(tmp_path / "c10"), *QUIET]) == 1
    assert "Cannot read" in capsys.readouterr().err

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", enwik8_text(50_000))
    (tmp_path / "e8").mkdir()
    (tmp_path / "e8" / "enwik8.zip").write_bytes(_damaged(buffer.getvalue(), 60, 120))
    assert enwik8.main(["--data-dir", str(tmp_path / "e8"), *QUIET]) == 1
    assert "Cannot read" in capsys.readouterr().err
    for folder in ("mnist", "c10", "e8"):
        assert not [n for n in os.listdir(tmp_path / folder) if n.endswith(".hdf5")]


def test_mnist_shape_checks(tmp_path, make, capsys):
    make.mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(make.idx_bytes(np.zeros(4)))
    assert run_mnist(tmp_path) == 1
    assert "one label per image" in capsys.readouterr().err
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(make.idx_bytes(np.zeros((4, 8, 8))))
    assert run_mnist(tmp_path) == 1
    assert "28x28" in capsys.readouterr().err
    make.mnist(tmp_path, compress=False)
    assert mnist.main(["--data-dir", str(tmp_path), "--validation-size", "12", *QUIET]) == 1
    assert "--validation-size" in capsys.readouterr().err


def test_progress_is_shown(tmp_path, make, capsys):
    make.mnist(tmp_path)
    assert mnist.main(["--data-dir", str(tmp_path), "--validation-size", "4", "--no-download"]) == 0
    err = capsys.readouterr().err
    assert "Writing MNIST.hdf5" in err and "images" in err and "100%" in err
    assert "Wrote " + str(tmp_path / "MNIST.hdf5") in err


def test_a_failed_write_leaves_nothing(tmp_path, make, monkeypatch):
    make.mnist(tmp_path)

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist, "write_dataset", broken)
    assert run_mnist(tmp_path) == 130
    assert sorted(os.listdir(tmp_path)) == sorted(
        name for pair in mnist.FILES.values() for name in pair
    )


# ------------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path, make):
    train_x, train_t, test_x, test_t = make.cifar10(tmp_path / "cifar-10-binary.tar.gz")
    args = ["--data-dir", str(tmp_path), "--validation-size", "5", *QUIET]
    assert cifar.main_cifar10(args) == 0
    data, attrs = read_all(tmp_path / "CIFAR-10.hdf5")
    # normalised by the pixel-wise mean and std of the first 10 training images
    mean = train_x[:10].astype(np.float64).mean(axis=0)
    std = train_x[:10].astype(np.float64).std(axis=0)
    assert attrs["mean"].shape == attrs["std"].shape == (32, 32, 3)
    assert attrs["mean"].dtype == np.float64
    np.testing.assert_allclose(attrs["mean"], mean)
    np.testing.assert_allclose(attrs["std"], std)
    expected = {
        "normalized_split/training": (train_x[:10], train_t[:10]),
        "normalized_split/validation": (train_x[10:], train_t[10:]),
        "normalized_split/test": (test_x, test_t),
        "normalized_full/training": (train_x, train_t),
        "normalized_full/test": (test_x, test_t),
    }
    assert len(data) == 10
    for group, (x, t) in expected.items():
        default, targets = data[f"{group}/default"], data[f"{group}/targets"]
        assert default.shape == (1, len(x), 32, 32, 3) and default.dtype == np.float32
        assert targets.shape == (1, len(x), 1) and targets.dtype == np.uint8
        np.testing.assert_allclose(default[0], (x - mean) / std, rtol=1e-5, atol=1e-5)
        # the targets stay class ids (the reference normalised those of normalized_full)
        np.testing.assert_array_equal(targets[0, :, 0], t)
    training = data["normalized_split/training/default"][0].astype(np.float64)
    np.testing.assert_allclose(training.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(training.std(axis=0), 1, atol=1e-4)
    assert "CIFAR-10" in text(attrs["description"])


def test_cifar10_channels_are_nhwc(tmp_path, make):
    # a red image: only channel 0 is lit, which the R plane of the record holds
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[0, :, :, 0] = 200
    images[1, 5, 7, 2] = 100
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for i in range(1, 6):
            make.add_member(
                archive,
                f"cifar-10-batches-bin/data_batch_{i}.bin",
                bytes([3]) + images[0].transpose(2, 0, 1).tobytes(),
            )
        record = bytes([4]) + images[1].transpose(2, 0, 1).tobytes()
        make.add_member(archive, "cifar-10-batches-bin/test_batch.bin", record)
    parts = cifar.read_cifar_archive(str(path), cifar.DATASETS["CIFAR-10"])
    train_x, train_t = parts["train"]
    assert train_x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(train_x[0], images[0])
    np.testing.assert_array_equal(train_t, [3] * 5)
    np.testing.assert_array_equal(parts["test"][0][0], images[1])


def test_cifar100_uses_the_fine_labels(tmp_path, make):
    train_x, train_fine, test_x, test_fine = make.cifar100(tmp_path / "cifar-100-binary.tar.gz")
    args = ["--data-dir", str(tmp_path), "--validation-size", "5", *QUIET]
    assert cifar.main_cifar100(args) == 0
    data, attrs = read_all(tmp_path / "CIFAR-100.hdf5")
    np.testing.assert_array_equal(data["normalized_full/training/targets"][0, :, 0], train_fine)
    np.testing.assert_array_equal(data["normalized_split/test/targets"][0, :, 0], test_fine)
    np.testing.assert_array_equal(
        data["normalized_split/validation/targets"][0, :, 0], train_fine[10:]
    )
    mean = train_x[:10].astype(np.float64).mean(axis=0)
    std = train_x[:10].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(
        data["normalized_split/test/default"][0], (test_x - mean) / std, rtol=1e-5, atol=1e-5
    )
    assert "fine labels" in text(attrs["description"])


def test_cifar_defaults_and_commands():
    assert cifar.build_parser(cifar.DATASETS["CIFAR-10"]).parse_args([]).validation_size == 10000
    assert cifar.build_parser(cifar.DATASETS["CIFAR-100"]).prog == "brainstorm-prepare-cifar100"
    assert cifar.DATASETS["CIFAR-10"].output_name == "CIFAR-10.hdf5"


def test_cifar_wrong_archive(tmp_path, make, capsys):
    # a CIFAR-100 archive given to the CIFAR-10 command
    make.cifar100(tmp_path / "c100.tar.gz")
    args = ["--source", str(tmp_path / "c100.tar.gz"), "--data-dir", str(tmp_path), *QUIET]
    assert cifar.main_cifar10(args) == 1
    err = capsys.readouterr().err
    assert "has no file cifar-10-batches-bin/data_batch_1.bin" in err
    # a truncated record
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for i in range(1, 6):
            make.add_member(archive, f"cifar-10-batches-bin/data_batch_{i}.bin", b"\x01" * 3000)
    assert cifar.main_cifar10(["--data-dir", str(tmp_path), *QUIET]) == 1
    assert "not a multiple of the 3073-byte records" in capsys.readouterr().err
    # not an archive at all
    path.write_bytes(b"nonsense")
    assert cifar.main_cifar10(["--data-dir", str(tmp_path), *QUIET]) == 1
    assert "Cannot read" in capsys.readouterr().err
    assert not (tmp_path / "CIFAR-10.hdf5").exists()


def test_cifar_download(tmp_path, make, monkeypatch):
    make.cifar10(tmp_path / "web.tar.gz")
    dataset = cifar.DATASETS["CIFAR-10"]
    monkeypatch.setattr(dataset, "url", (tmp_path / "web.tar.gz").as_uri())
    data_dir = tmp_path / "data"
    assert (
        cifar.main_cifar10(["--data-dir", str(data_dir), "--validation-size", "5", "--quiet"]) == 0
    )
    assert sorted(os.listdir(data_dir)) == ["CIFAR-10.hdf5", "cifar-10-binary.tar.gz"]


# ------------------------------------------------------------------------------ enwik8


def reference_convert_to_batches(serial_data, length, bs):
    """The reference's layout (data/create_hutter.py), the oracle for ours."""
    num_batches = serial_data.size // (length * bs)
    serial_data = serial_data.reshape((bs, num_batches * length))
    return np.vstack(np.hsplit(serial_data, num_batches)).T[:, :, None]


def test_convert_to_batches_matches_the_reference():
    serial = np.arange(600)
    ours = enwik8.convert_to_batches(serial, 10, 4)
    np.testing.assert_array_equal(ours, reference_convert_to_batches(serial, 10, 4))
    assert ours.shape == (10, 60, 1)
    # sequence k of batch b + 1 continues sequence k of batch b
    for b in range(14):
        for k in range(4):
            assert ours[0, (b + 1) * 4 + k, 0] == ours[-1, b * 4 + k, 0] + 1
    with pytest.raises(ValueError, match="not a multiple"):
        enwik8.convert_to_batches(np.arange(599), 10, 4)


def test_encode_bytes():
    raw = np.frombuffer(b"hello world", dtype=np.uint8)
    unique, ids = enwik8.encode_bytes(raw)
    assert bytes(unique) == b" dehlorw"
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(unique[ids], raw)


def enwik8_text(size, seed=0):
    rng = np.random.RandomState(seed)
    alphabet = np.frombuffer(b"<page> abcdefghij\n\xc3\xa9", dtype=np.uint8)
    return alphabet[rng.randint(0, len(alphabet), size)].tobytes()


def test_enwik8_round_trip(tmp_path, make):
    # 63 training characters (trimmed to 60), 20 validation and 20 test characters
    raw = enwik8_text(103)
    make.enwik8(tmp_path / "enwik8.zip", raw)
    args = ["--data-dir", str(tmp_path), "--seq-len", "5", "--batch-size", "2"]
    assert enwik8.main([*args, "--test-chars", "20", *QUIET]) == 0
    data, attrs = read_all(tmp_path / "HutterPrize.hdf5")
    unique = attrs["unique"]
    assert bytes(unique) == bytes(sorted(set(raw)))
    assert set(data) == {
        f"split/{part}/{name}"
        for part in ("training", "validation", "test")
        for name in ("default", "targets")
    }
    shapes = {"training": (5, 12, 1), "validation": (5, 4, 1), "test": (5, 4, 1)}
    starts = {"training": 0, "validation": 63, "test": 83}
    text_bytes = np.frombuffer(raw, dtype=np.uint8)
    for part, shape in shapes.items():
        x, t = data[f"split/{part}/default"], data[f"split/{part}/targets"]
        assert x.shape == t.shape == shape
        assert x.dtype == t.dtype == np.uint8
        # undo the layout: the text of the part, and the next characters as targets
        size = shape[0] * shape[1]
        start = starts[part]
        serial_x = unflatten(x, 5, 2)
        serial_t = unflatten(t, 5, 2)
        np.testing.assert_array_equal(unique[serial_x], text_bytes[start : start + size])
        if part == "test":
            np.testing.assert_array_equal(
                unique[serial_t[:-1]], text_bytes[start + 1 : start + size]
            )
            assert serial_t[-1] == 0  # no next character after the last one
        else:
            np.testing.assert_array_equal(
                unique[serial_t], text_bytes[start + 1 : start + size + 1]
            )
        # the batch layout: batch b + 1 continues batch b, sequence by sequence
        for b in range(shape[1] // 2 - 1):
            for k in range(2):
                assert t[-1, b * 2 + k, 0] == x[0, (b + 1) * 2 + k, 0]
    description = text(attrs["description"])
    assert "sets of 60,\n20 and 20 characters" in description


def unflatten(laid_out, length, batch_size):
    """The 1-D text from the (length, N, 1) layout of convert_to_batches."""
    num_batches = laid_out.shape[1] // batch_size
    rows = laid_out[:, :, 0].reshape(length, num_batches, batch_size).transpose(2, 1, 0)
    return rows.reshape(-1)


def test_enwik8_defaults_are_those_of_the_reference():
    args = enwik8.build_parser().parse_args([])
    assert (args.seq_len, args.batch_size, args.test_chars) == (100, 100, 5_000_000)
    assert enwik8.OUTPUT_NAME == "HutterPrize.hdf5"


def test_enwik8_errors(tmp_path, make, capsys):
    make.enwik8(tmp_path / "enwik8.zip", enwik8_text(30))
    base = ["--data-dir", str(tmp_path), *QUIET]
    assert enwik8.main([*base, "--test-chars", "20"]) == 1
    assert "too few" in capsys.readouterr().err
    assert enwik8.main([*base, "--test-chars", "5", "--seq-len", "10", "--batch-size", "2"]) == 1
    assert "fewer than one batch" in capsys.readouterr().err
    assert enwik8.main([*base, "--seq-len", "0"]) == 1
    assert "--seq-len must be positive" in capsys.readouterr().err
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("enwik9", b"x")
    assert enwik8.main([*base, "--source", str(tmp_path / "other.zip")]) == 1
    assert "no file named 'enwik8'" in capsys.readouterr().err
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    assert enwik8.main([*base, "--source", str(tmp_path / "bad.zip")]) == 1
    assert "Cannot read" in capsys.readouterr().err
    assert enwik8.main([*base, "--source", str(tmp_path / "missing.zip")]) == 1
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "HutterPrize.hdf5").exists()


# ---------------------------------------------------------------------------- commands


def test_console_scripts_are_declared():
    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts")}
    expected = {
        "brainstorm-prepare-mnist": mnist.main,
        "brainstorm-prepare-cifar10": cifar.main_cifar10,
        "brainstorm-prepare-cifar100": cifar.main_cifar100,
        "brainstorm-prepare-enwik8": enwik8.main,
    }
    for name, function in expected.items():
        assert scripts[name].load() is function


def test_help_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "brainstorm.tools.prepare.mnist", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "brainstorm-prepare-mnist" in out and "--force" in out and "--no-download" in out
    assert "BRAINSTORM_DATA_DIR" in out


def test_default_data_dir(monkeypatch):
    monkeypatch.delenv("BRAINSTORM_DATA_DIR", raising=False)
    assert _common.default_data_dir() == "."
    monkeypatch.setenv("BRAINSTORM_DATA_DIR", "/some/where")
    assert _common.default_data_dir() == "/some/where"


def test_files_get_ordinary_permissions(tmp_path, make):
    # the temporary file of an atomic write is private; the result must not be
    make.mnist(tmp_path)
    assert run_mnist(tmp_path) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "MNIST.hdf5").stat().st_mode & 0o777 == 0o666 & ~umask
