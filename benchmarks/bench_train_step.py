"""Train-step throughput of three reference networks on the NumpyHandler at float32.

A train step is ``forward_pass(training_pass=True)``, ``backward_pass()`` and a
plain SGD update of the flat parameter buffer with a handler op
(``mult_add_st(-lr, gradients, parameters)``), all in one handler session as
the Trainer runs them (``Handler.session``: the NumpyHandler's own threads);
the batch is copied into the network once, before timing. The networks run with ``net.compute_data_deltas =
False``, as training does: nobody reads the deltas of the data, so the first
layer skips computing them (``--data-deltas`` computes them anyway). The networks:

* ``mlp``: the mnist_pi MLP, 784-1200-1200-10 (rel, rel, linear) -> SoftmaxCE,
  batch 100, without the reference's Dropout layers (``--mlp-dropout`` adds them:
  they cost elementwise work and random numbers but no FLOPs);
* ``cnn``: the CIFAR-10 CNN of the walkthrough, batch 100 of 32x32x3: three times
  Conv 5x5 padding 2 (32, 32, 64 filters, rel) -> MaxPool 3x3 stride 2, then
  FC 64 (rel) -> FC 10 (linear) -> SoftmaxCE;
* ``lstm``: a character LSTM, 205 symbols one-hot -> Lstm 512 -> FC 205 (linear)
  -> SoftmaxCE, 100 time steps, batch 50 (only if ``bs.layers.Lstm`` is installed).

The FLOPs of a step are counted analytically from the matrix products alone,
``2 * M * N * K`` per GEMM: each forward product plus its two backward products
(input deltas and weight gradients), i.e. 3x the forward FLOPs, except the
input-delta products a layer skips because its input is the data (only the
products actually computed are counted); convolutions as im2col GEMMs. Activations, pooling, softmax and the update are not counted. The
achieved GFLOP/s are compared with NumPy's own float32 GEMM peak measured side
by side in the same run: each network runs ``--rounds`` rounds of one square
``np.dot`` of size 2048, 0.15 s of untimed train steps (so that OpenBLAS's
threads, which spin for about 0.1 s after the peak product, are idle again, as
they are between the steps of training), about 0.2 s of timed train steps, and
one more ``np.dot``;
every round gives a fraction (its median step against the mean of its two
peaks) and the median over the rounds is reported. The numbers of a round are
taken within a fraction of a second, so the fraction holds even when other work on a
shared machine changes its speed from minute to minute (it does, here: the peak
has been seen anywhere between 105 and 230 GFLOP/s within one hour); peaks that
disagree by more than 15% are flagged. The "GEMMs" column times the step's
products alone (``np.dot`` at the same shapes, against a peak measured just
before): a ceiling for any implementation built on them.

Usage::

    python benchmarks/bench_train_step.py [--out results.json] [--rounds 15]
        [--steps N] [--only mlp,cnn] [--peer torch] [--breakdown] [--profile]

``--peer torch`` (with PyTorch installed) times the same networks in PyTorch
(``torch_peer.py``) in the same rounds, between the same peak measurements.

Reports, never asserts: the targets of issue #4 are printed next to the numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time

import numpy as np

import brainstorm as bs
from brainstorm.handlers.numpy_handler import NumpyHandler
from brainstorm.initializers import Gaussian

#: Fraction of the GEMM peak each network should reach (issue #4).
TARGETS = {"mlp": 0.45, "cnn": 0.30, "lstm": 0.55}
LEARNING_RATE = 1e-3
#: Size of the square float32 GEMM whose speed is the peak.
PEAK_SIZE = 2048
#: About how long the train steps of one round take (``--steps 0``: chosen from this).
ROUND_SECONDS = 0.2
#: Untimed train steps after each peak measurement (see :func:`settle`).
SETTLE_SECONDS = 0.15
#: Peak measurements further apart than this mean the machine was busy.
BUSY_RATIO = 0.85
BLAS_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


# -- environment and GEMM peak ------------------------------------------------------------------


def describe_environment():
    """Versions, BLAS, the BLAS-related environment variables and threadpoolctl's view."""
    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
        "env": {name: os.environ.get(name) for name in BLAS_ENV},
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        env["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception as err:  # the layout of show_config is not a stable API
        env["numpy_blas"] = f"unknown ({err})"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        env["threadpoolctl"] = None
    else:
        keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
        env["threadpoolctl"] = [{k: pool.get(k) for k in keys} for pool in threadpool_info()]
    return env


def _cpu_ticks():
    """``(steal, total)`` CPU ticks of the machine so far (Linux's /proc/stat), or None.

    Steal is the time a virtual machine's CPUs were ready to run but the host ran
    something else: on a shared host it slows every step, and the threads that
    wait for one another most (the CNN's) most of all.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:]]
    return ticks[7], sum(ticks[:8])


def _steal_share(before, after):
    """The share of CPU time stolen between two :func:`_cpu_ticks`, or None."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _load_average():
    """The 1-minute load average (other work on the machine skews every number), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _peak_operands(size=PEAK_SIZE):
    rng = np.random.RandomState(0)
    a = rng.rand(size, size).astype(np.float32)
    b = rng.rand(size, size).astype(np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.dot(a, b, out=out)  # warm-up
    return a, b, out


def gemm_peak(repeats=7, operands=None):
    """Median GFLOP/s of a square float32 ``np.dot`` of size :data:`PEAK_SIZE`."""
    a, b, out = operands or _peak_operands()
    size = a.shape[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.dot(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


# -- the networks ---------------------------------------------------------------------------------


def _classifier(features, time_steps, batch_size, hidden, num_classes, seed):
    """Input -> ``hidden`` layers -> SoftmaxCE -> Loss, initialized, with random data."""
    inp = bs.layers.Input({"default": ("T", "B", *features), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    last = inp
    for layer in hidden:
        last = last >> layer
    last >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss(name="Loss")
    net = bs.Network.from_layer(out, handler=NumpyHandler(np.float32))
    net.initialize({"default": Gaussian(0.01)}, seed=seed)
    rng = np.random.RandomState(seed)
    shape = (time_steps, batch_size)
    data = {
        "default": rng.randn(*shape, *features).astype(np.float32),
        "targets": rng.randint(0, num_classes, (*shape, 1)).astype(np.float32),
    }
    return net, data


def build_mlp(dropout=False):
    fc = bs.layers.FullyConnected
    layers = [fc(1200, name="Hid1"), fc(1200, name="Hid2"), fc(10, "linear", name="FC")]
    if dropout:  # as the reference: Dropout 0.2 before Hid1, 0.5 after Hid1 and Hid2
        drops = [bs.layers.Dropout(p, name=f"Drop{i}") for i, p in enumerate((0.2, 0.5, 0.5))]
        layers = [layer for pair in zip(drops, layers) for layer in pair]
    return _classifier((784,), 1, 100, layers, 10, seed=1)


def build_cnn():
    conv, pool = bs.layers.Convolution2D, bs.layers.Pooling2D
    layers = []
    for i, filters in enumerate((32, 32, 64), start=1):
        layers.append(conv(filters, kernel_size=(5, 5), padding=2, name=f"Conv{i}"))
        layers.append(pool(type="max", kernel_size=(3, 3), stride=(2, 2), name=f"Pool{i}"))
    layers.append(bs.layers.FullyConnected(64, name="FC"))
    layers.append(bs.layers.FullyConnected(10, activation="linear", name="Output_projection"))
    return _classifier((32, 32, 3), 1, 100, layers, 10, seed=2)


def build_lstm():
    layers = [
        bs.layers.Lstm(512, name="Lstm"),
        bs.layers.FullyConnected(205, activation="linear", name="Output_projection"),
    ]
    net, data = _classifier((205,), 100, 50, layers, 205, seed=3)
    symbols = data["targets"][..., 0].astype(int)  # one-hot inputs, as OneHot would give
    data["default"] = np.eye(205, dtype=np.float32)[np.roll(symbols, 1, axis=0)]
    return net, data


def train_step_gemms(net, time_steps, batch_size):
    """The matrix products of one train step, by layer: lists of ``(M, K, N, count)``.

    Forward ``(M, K) @ (K, N)``, then the two backward products of each
    (input deltas and weight gradients), so every layer does 3x its forward
    FLOPs. Convolutions are counted as im2col GEMMs, the Lstm as one input
    projection for all time steps plus one recurrent product per step. The
    input-delta product of a layer that skips the deltas of its input
    (``layer.inputs_without_deltas``, see ``net.compute_data_deltas``) is left out.
    """
    gemms = {}
    rows = time_steps * batch_size
    for name, layer in net.layers.items():
        kind = layer.type_name
        skip = "default" in layer.inputs_without_deltas
        if kind == "FullyConnected":
            n_in = layer.in_shapes["default"].feature_size
            n_out = layer.out_shapes["default"].feature_size
            gemms[name] = [(rows, n_in, n_out, 1), (rows, n_out, n_in, 1), (n_out, rows, n_in, 1)]
        elif kind == "Convolution2D":
            ho, wo, filters = layer.out_shapes["default"].feature_shape
            kh, kw = layer.kernel_size
            window = kh * kw * layer.in_shapes["default"].feature_shape[-1]
            pixels = rows * ho * wo
            gemms[name] = [
                (pixels, window, filters, 1),
                (pixels, filters, window, 1),
                (window, pixels, filters, 1),
            ]
        elif kind == "Lstm":
            n_in = layer.in_shapes["default"].feature_size
            size = layer.out_shapes["default"].feature_size
            gates = 4 * size
            gemms[name] = [
                (rows, n_in, gates, 1),  # input projection, all steps at once
                (batch_size, size, gates, time_steps),  # recurrent, step by step
                (batch_size, gates, size, time_steps),  # recurrent deltas, step by step
                (rows, gates, n_in, 1),  # input deltas
                (n_in, rows, gates, 1),  # input weight gradients
                (size, rows, gates, 1),  # recurrent weight gradients
            ]
        if skip and name in gemms:  # the second product is always the input deltas
            del gemms[name][3 if kind == "Lstm" else 1]
    return gemms


def gemm_flops(gemms):
    """``2 * M * K * N`` summed over a list of ``(M, K, N, count)``."""
    return sum(2 * m * k * n * count for m, k, n, count in gemms)


def gemm_seconds(gemms, repeats=3):
    """How long the products take alone: NumPy float32 ``np.dot`` at the same shapes.

    The best of ``repeats`` for each shape: a bound on what any implementation
    built on these GEMMs can reach, whatever else it does.
    """
    rng = np.random.RandomState(0)
    total = 0.0
    for m, k, n, count in gemms:
        a = rng.rand(m, k).astype(np.float32)
        b = rng.rand(k, n).astype(np.float32)
        out = np.empty((m, n), dtype=np.float32)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(count):
                np.dot(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        total += best
    return total


# -- timing -----------------------------------------------------------------------------------


def train_step(net):
    # in one handler session, as the Trainer runs its steps (see Handler.session)
    with net.handler.session():
        net.forward_pass(training_pass=True)
        net.backward_pass()
        net.handler.mult_add_st(-LEARNING_RATE, net.buffer.gradients, net.buffer.parameters)


def time_steps_of(net, steps, warmup):
    """Seconds of each of ``steps`` train steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        train_step(net)
    return _time_calls(lambda: train_step(net), steps)


def settle(net, seconds=SETTLE_SECONDS):
    """Untimed train steps for ``seconds``, as in the middle of training.

    OpenBLAS keeps its threads spinning for about 0.1 s after a product (such
    as the peak measurement) and they would compete with the handler's own
    threads (see ``Handler.session``) for the first steps; in training nothing
    else runs between the steps.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        train_step(net)


def _time_calls(function, count):
    """Seconds of each of ``count`` calls of ``function``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _peer_network(peer, key):
    """The peer library's twin of network ``key`` (see ``torch_peer.py``), or None."""
    if peer is None:
        return None
    import torch_peer  # next to this script; needs PyTorch

    return torch_peer.build(key)


def _median_seconds(function, repeats):
    return statistics.median(_time_calls(function, repeats))


def layer_breakdown(net, flops, repeats=5):
    """Median seconds of each layer's forward and backward pass (run on their own)."""
    net.forward_pass(training_pass=True)
    net.backward_pass()
    rows = []
    for name, layer in net.layers.items():
        if name == "Input":
            continue
        buffers = net.buffer[name]
        with net.handler.session():  # as in a train step
            fwd = _median_seconds(lambda: layer.forward_pass(buffers, True), repeats)  # noqa: B023
            bwd = _median_seconds(lambda: layer.backward_pass(buffers), repeats)  # noqa: B023
        rows.append({"layer": name, "type": layer.type_name, "forward_s": fwd, "backward_s": bwd})
        if name in flops:
            rows[-1]["gflops_per_s"] = flops[name] / (fwd + bwd) / 1e9
    return rows


def profile_steps(net, steps, top=18):
    """cProfile of ``steps`` train steps: the top functions by own time, as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        train_step(net)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


# -- main ---------------------------------------------------------------------------------------

BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "lstm": build_lstm}
DESCRIPTIONS = {
    "mlp": "mnist_pi MLP 784-1200-1200-10, batch 100",
    "cnn": "CIFAR-10 CNN (walkthrough), batch 100, 32x32x3",
    "lstm": "char LSTM 205-512-205, T=100, batch 50",
}


def run_network(key, args):
    if key == "lstm" and not hasattr(bs.layers, "Lstm"):
        print("lstm: skipped, bs.layers.Lstm is not installed")
        return {"network": key, "skipped": "bs.layers.Lstm is not installed"}
    if key == "mlp":
        net, data = build_mlp(dropout=args.mlp_dropout)
    else:
        net, data = BUILDERS[key]()
    time_size, batch_size = data["default"].shape[:2]
    # training: nobody reads the data's deltas, so the first layer may skip them
    net.compute_data_deltas = args.data_deltas
    net.provide_external_data(data)
    gemms = train_step_gemms(net, time_size, batch_size)
    layer_flops = {name: gemm_flops(g) for name, g in gemms.items()}
    step_flops = sum(layer_flops.values())
    warmup = time_steps_of(net, max(1, args.warmup), 0)
    # Rounds of (one peak GEMM, a few train steps, one peak GEMM): each round's
    # fraction compares numbers taken within a fraction of a second, in the same
    # state of a machine shared with other work.
    per_round = args.steps or max(1, round(ROUND_SECONDS / min(warmup)))
    peer = _peer_network(args.peer, key)
    if peer is not None:
        peer_warmup = _time_calls(peer.step, max(1, args.warmup))
        peer_per_round = args.steps or max(1, round(ROUND_SECONDS / min(peer_warmup)))
    operands = _peak_operands()
    rounds = []
    ticks = _cpu_ticks()
    for _ in range(args.rounds):
        before = gemm_peak(repeats=1, operands=operands)
        settle(net)
        times = time_steps_of(net, per_round, 0)
        peer_times = _time_calls(peer.step, peer_per_round) if peer is not None else None
        after = gemm_peak(repeats=1, operands=operands)
        rounds.append({"peak_gflops": (before + after) / 2, "step_seconds": times})
        if peer is not None:
            rounds[-1]["peer_step_seconds"] = peer_times
    steal = _steal_share(ticks, _cpu_ticks())
    times = [t for r in rounds for t in r["step_seconds"]]
    median = statistics.median(times)
    fractions = [
        step_flops / statistics.median(r["step_seconds"]) / 1e9 / r["peak_gflops"] for r in rounds
    ]
    best_fractions = [step_flops / min(r["step_seconds"]) / 1e9 / r["peak_gflops"] for r in rounds]
    peak_before_gemms = gemm_peak(repeats=3)
    gemm_only = gemm_seconds([g for layer in gemms.values() for g in layer])
    description = DESCRIPTIONS[key]
    if key == "mlp":
        description += ", dropout" if args.mlp_dropout else ", no dropout"
    result = {
        "network": key,
        "description": description,
        "time_steps": int(time_size),
        "batch_size": int(batch_size),
        "gflop_per_step": step_flops / 1e9,
        "step_seconds": times,
        "median_seconds": median,
        "gflops_per_s": step_flops / median / 1e9,
        "best_gflops_per_s": step_flops / min(times) / 1e9,
        "gemm_only_seconds": gemm_only,
        "gemm_only_gflops_per_s": step_flops / gemm_only / 1e9,
        "rounds": rounds,
        "fraction_of_peak": statistics.median(fractions),
        "best_fraction_of_peak": max(best_fractions),
        "gemm_only_fraction_of_peak": step_flops / gemm_only / 1e9 / peak_before_gemms,
        "gemm_peak_gflops": [r["peak_gflops"] for r in rounds] + [peak_before_gemms],
        "target_fraction": TARGETS[key],
        "compute_data_deltas": net.compute_data_deltas,
        "steal_share": steal,
    }
    if peer is not None:
        peer_times = [t for r in rounds for t in r["peer_step_seconds"]]
        result["peer"] = {
            "name": args.peer,
            "version": sys.modules["torch_peer"].version(),
            "median_seconds": statistics.median(peer_times),
            "fraction_of_peak": statistics.median(
                step_flops / statistics.median(r["peer_step_seconds"]) / 1e9 / r["peak_gflops"]
                for r in rounds
            ),
        }
    if args.breakdown:
        result["layers"] = layer_breakdown(net, layer_flops)
    if args.profile:
        result["profile"] = profile_steps(net, max(2, args.steps // 2))
    return result


def print_report(env, peaks, results):
    print("Environment")
    print(f"  Python {env['python']}, NumPy {env['numpy']}, {env['cpu_count']} CPUs")
    print(f"  NumPy BLAS: {env['numpy_blas']}")
    for name, value in env["env"].items():
        print(f"  {name} = {value if value is not None else '(not set)'}")
    if env["threadpoolctl"] is None:
        print("  threadpoolctl: not installed (no BLAS kernel report)")
    for pool in env["threadpoolctl"] or ():
        print(
            "  threadpoolctl: {internal_api} {version}, kernel {architecture}, "
            "{num_threads} threads".format(**pool)
        )
    print(
        f"  load average (1 min): {env['load_average']} at the start, "
        f"{env['load_average_after']} at the end (other work skews every number)"
    )
    print(
        f"float32 GEMM peak (2048^3 np.dot, before and after every round of train steps): "
        f"{peaks['lowest']:.1f} to {peaks['highest']:.1f} GFLOP/s"
    )
    if peaks["lowest"] < BUSY_RATIO * peaks["highest"]:
        print(
            "  NOTE: the peak changed during the run (other work on the machine); every "
            "fraction below compares a round's steps with that round's own peak"
        )
    print()
    header = (
        f"{'network':<52} {'GFLOP/step':>10} {'ms/step':>8} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'best':>6} {'GEMMs':>6} {'target':>7}"
    )
    print(header + "\n" + "-" * len(header))
    for r in results:
        if "skipped" in r:
            print(f"{r['network']:<52} skipped: {r['skipped']}")
            continue
        fraction = r["fraction_of_peak"]
        mark = "met" if fraction >= r["target_fraction"] else "not met"
        print(
            f"{r['description']:<52} {r['gflop_per_step']:>10.2f} "
            f"{1e3 * r['median_seconds']:>8.1f} {r['gflops_per_s']:>8.1f} {fraction:>8.1%} "
            f"{r['best_fraction_of_peak']:>6.1%} {r['gemm_only_fraction_of_peak']:>6.1%} "
            f"{r['target_fraction']:>6.0%} {mark}"
        )
        if "peer" in r:
            peer = r["peer"]
            print(
                f"{'  the same network in ' + peer['version']:<52} {'':>10} "
                f"{1e3 * peer['median_seconds']:>8.1f} "
                f"{r['gflop_per_step'] / peer['median_seconds']:>8.1f} "
                f"{peer['fraction_of_peak']:>8.1%}   (Brainstorm takes "
                f"{r['median_seconds'] / peer['median_seconds']:.2f}x its time)"
            )
    print(
        "ms/step, GFLOP/s: the median step; of peak: the median over the rounds of each\n"
        "round's median step against its own peak; best: the best round's fastest step;\n"
        "GEMMs: the step's matrix products alone (np.dot at the same shapes, back to back),\n"
        "a ceiling"
    )
    steals = [(r["network"], r["steal_share"]) for r in results if r.get("steal_share") is not None]
    if steals:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in steals)
        print(
            f"CPU time stolen by the host during the rounds (/proc/stat): {shares}\n"
            "(a virtual machine's CPUs waiting for a busy host: every number suffers, the\n"
            "CNN's threads, which wait for one another most, more than the peak product)"
        )
    if any(not r.get("compute_data_deltas", True) for r in results):
        print(
            "net.compute_data_deltas = False (training: nobody reads the data's deltas): the\n"
            "layers fed by the data skip their input-delta products, which are not counted"
        )
    for r in results:
        if "layers" in r:
            print(f"\nPer-layer time of {r['network']} (each pass run alone, median):")
            total = sum(row["forward_s"] + row["backward_s"] for row in r["layers"])
            for row in r["layers"]:
                both = row["forward_s"] + row["backward_s"]
                rate = f"{row['gflops_per_s']:7.1f} GFLOP/s" if "gflops_per_s" in row else ""
                print(
                    f"  {row['layer']:<18} {row['type']:<15} "
                    f"fwd {1e3 * row['forward_s']:7.2f} ms  bwd {1e3 * row['backward_s']:7.2f} ms  "
                    f"{both / total:6.1%}  {rate}"
                )
        if "profile" in r:
            print(f"\ncProfile of {r['network']} train steps (by own time):")
            print(r["profile"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of (peak, steps, peak)")
    parser.add_argument(
        "--steps", type=int, default=0, help="train steps per round (0: about 0.2 s of them)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--only", default="mlp,cnn,lstm", help="comma-separated networks")
    parser.add_argument("--mlp-dropout", action="store_true", help="the reference's Dropouts")
    parser.add_argument(
        "--data-deltas",
        action="store_true",
        help="compute the deltas of the data too (net.compute_data_deltas = True)",
    )
    parser.add_argument(
        "--peer",
        choices=["torch"],
        help="also time the same networks in PyTorch, in the same rounds (needs torch)",
    )
    parser.add_argument("--breakdown", action="store_true", help="time every layer alone")
    parser.add_argument("--profile", action="store_true", help="cProfile some steps")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(keys) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown networks {sorted(unknown)}; choose from {sorted(BUILDERS)}")

    env = describe_environment()
    results = [run_network(key, args) for key in keys]
    env["load_average_after"] = _load_average()
    measured = [p for r in results if "skipped" not in r for p in r["gemm_peak_gflops"]]
    measured = measured or [gemm_peak(repeats=3)]
    peaks = {"highest": max(measured), "lowest": min(measured), "measurements": measured}
    print_report(env, peaks, results)
    if args.out:
        report = {"environment": env, "gemm_peak_gflops": peaks, "results": results}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nResults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
