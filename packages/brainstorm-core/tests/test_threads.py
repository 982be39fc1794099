"""The NumpyHandler's own threads: the team, sessions and the ops they share."""

import contextlib
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import brainstorm.handlers.numpy_handler as numpy_handler
from brainstorm.handlers import NumpyHandler, _blas, _packed, _threads
from brainstorm.testing.handler_conformance import (
    reference_conv2d_backward,
    reference_conv2d_forward,
    reference_maxpool2d_backward,
    reference_maxpool2d_forward,
)

needs_spin_locks = pytest.mark.skipif(
    _threads._spin_functions() is None, reason="no pthread spin locks here"
)
needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)


@pytest.fixture
def team():
    return _threads.Team(2)


def _where(log, key):
    def job():
        log[key] = threading.get_ident()

    return job


# --- the team -----------------------------------------------------------------


@needs_spin_locks
def test_a_session_runs_the_second_job_on_a_helper_thread(team):
    log = {}
    with team.session():
        assert team.active
        team.run([_where(log, "first"), _where(log, "second")])
    assert log["first"] == threading.get_ident()
    assert log["second"] != threading.get_ident()
    assert not team.active


def test_without_a_session_every_job_runs_here(team):
    log = {}
    team.run([_where(log, "first"), _where(log, "second")])
    assert log == {"first": threading.get_ident(), "second": threading.get_ident()}


@needs_spin_locks
def test_sessions_nest_and_the_helpers_stop_after_the_outermost(team):
    calls = []
    with team.session(on_open=lambda: calls.append("open"), on_close=lambda: calls.append("close")):
        with team.session(on_open=lambda: calls.append("inner open")):
            assert team.active
        assert team.active  # still inside the outer session
        assert calls == ["open"]
    assert calls == ["open", "close"]
    log = {}
    team.run([_where(log, "first"), _where(log, "second")])
    assert log["second"] == threading.get_ident()


def _cpu_seconds_while_sleeping(seconds=0.2):
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@needs_spin_locks
def test_helpers_spin_only_from_the_first_shared_work_to_the_end_of_the_session(team):
    # CPU time, not wall time: a spinning helper burns a core while this thread sleeps
    with team.session():
        team.run([lambda: None, lambda: None])  # start the helper thread itself
    with team.session():
        idle = _cpu_seconds_while_sleeping()  # no shared work: the helpers sleep
        team.run([lambda: None, lambda: None])
        spinning = _cpu_seconds_while_sleeping()
    after = _cpu_seconds_while_sleeping()
    assert idle < 0.1
    assert spinning > 0.05
    assert after < 0.1


@needs_spin_locks
def test_an_error_in_a_job_reaches_the_caller_after_all_jobs_finished(team):
    finished = []

    def slow_then_done():
        threading.Event().wait(0.05)
        finished.append(True)

    def fails():
        raise ZeroDivisionError("in the helper")

    with team.session():
        with pytest.raises(ZeroDivisionError, match="in the helper"):
            team.run([slow_then_done, fails])
        assert finished == [True]
        with pytest.raises(KeyError):
            team.run([lambda: {}["missing"], slow_then_done])
        assert finished == [True, True]
        log = {}
        team.run([_where(log, "first"), _where(log, "second")])  # still works
        assert log["second"] != threading.get_ident()


@needs_spin_locks
def test_an_error_in_the_session_body_still_stops_the_helpers(team):
    with pytest.raises(RuntimeError):
        with team.session(on_close=lambda: None):
            raise RuntimeError("boom")
    assert not team.active
    with team.session():  # a new session works
        log = {}
        team.run([_where(log, "first"), _where(log, "second")])
        assert log["second"] != threading.get_ident()


@needs_spin_locks
def test_jobs_and_other_threads_compute_serially(team):
    nested = {}
    other = {}

    def nested_run():
        team.run([_where(nested, "a"), _where(nested, "b")])

    def other_thread():
        with team.session():  # the team is busy with the main thread's session
            team.run([_where(other, "a"), _where(other, "b")])
        other["me"] = threading.get_ident()

    with team.session():
        team.run([nested_run, lambda: None])
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert nested["a"] == nested["b"] == threading.get_ident()
    assert other["a"] == other["b"] == other["me"]


# --- deferred jobs ----------------------------------------------------------------


def _wake(team):
    """Shared work: from now on the helpers spin, and deferred jobs go to one."""
    team.run([lambda: None, lambda: None])
    assert team._awake


@needs_spin_locks
def test_a_job_deferred_before_any_shared_work_runs_here_on_one_thread(team):
    # a small network never wakes the helpers: its jobs run at once, serially
    seen = {}

    def job():
        seen["thread"] = threading.get_ident()
        seen["active"] = team.active

    with team.session():
        team.defer(job)
        assert seen == {"thread": threading.get_ident(), "active": False}
        assert not team._awake and team.active


def test_a_lane_must_be_hashable(team):
    with pytest.raises(TypeError, match="lane must be hashable, got list"):
        team.defer(lambda: None, lane=[1, 2])
    if team.size > 1 and _threads._spin_functions() is not None:
        with team.session():
            _wake(team)
            with pytest.raises(TypeError, match="hashable"):
                team.defer(lambda: None, lane=np.zeros(2))
            team.finish_deferred()
            log = {}
            team.run([_where(log, "first"), _where(log, "second")])
            assert log["second"] != threading.get_ident()


def test_without_a_session_a_deferred_job_runs_at_once(team):
    log = {}
    team.defer(_where(log, "job"))
    assert log == {"job": threading.get_ident()}
    team.finish_deferred()  # nothing to do


@needs_spin_locks
def test_a_deferred_job_runs_on_the_helper_while_the_caller_goes_on(team):
    started, release, log = threading.Event(), threading.Event(), {}

    def job():
        log["job"] = threading.get_ident()
        started.set()
        assert release.wait(10)

    with team.session():
        _wake(team)
        team.defer(job)
        assert started.wait(10)  # on the helper: this thread was not held up
        # the helper is busy: shared work runs here, all of it
        team.run([_where(log, "first"), _where(log, "second")])
        release.set()
        team.finish_deferred()
        assert log["first"] == log["second"] == threading.get_ident()
        assert log["job"] != threading.get_ident()
        team.run([_where(log, "again"), _where(log, "helper")])  # the helper is back
    assert log["helper"] != threading.get_ident()


@needs_spin_locks
@pytest.mark.parametrize("jobs_per_lane", [1, 7])
def test_jobs_of_one_lane_run_in_order_and_never_at_once(team, jobs_per_lane):
    lock = threading.Lock()
    running, order, overlaps, threads = {}, {}, [], set()

    def job(lane, number):
        def run():
            with lock:
                if running.get(lane):
                    overlaps.append(lane)
                running[lane] = True
                threads.add(threading.get_ident())
            threading.Event().wait(0.002)
            with lock:
                running[lane] = False
                order.setdefault(lane, []).append(number)

        return run

    with team.session():
        _wake(team)
        for number in range(jobs_per_lane):
            for lane in ("a", "b", "c"):
                team.defer(job(lane, number), lane=lane)
        team.finish_deferred()
        assert not team._later and team._drainer is None
    assert overlaps == []
    assert order == {lane: list(range(jobs_per_lane)) for lane in "abc"}


@needs_spin_locks
def test_deferred_jobs_compute_serially_wherever_they_run(team):
    seen = []

    def job():
        seen.append(team.active)
        team.run([_where({}, "a"), lambda: None])  # serially, not on a helper
        team.defer(lambda: seen.append("nested"))  # at once

    with team.session():
        _wake(team)
        for lane in range(6):
            team.defer(job, lane=lane)
        team.finish_deferred()
    assert seen.count(False) == 6 and seen.count("nested") == 6


@needs_spin_locks
def test_an_error_in_a_deferred_job_is_raised_by_finish_and_the_others_still_run(team):
    done = []

    def fails():
        raise ZeroDivisionError("deferred")

    with team.session():
        _wake(team)
        team.defer(fails, lane=0)
        for lane in (0, 1, 2):
            team.defer(lambda lane=lane: done.append(lane), lane=lane)
        with pytest.raises(ZeroDivisionError, match="deferred"):
            team.finish_deferred()
        assert sorted(done) == [0, 1, 2]
        team.finish_deferred()  # raised once only
        log = {}
        team.run([_where(log, "first"), _where(log, "second")])  # still sound
        assert log["second"] != threading.get_ident()


@needs_spin_locks
def test_the_end_of_a_session_finishes_deferred_jobs(team):
    done = []
    with team.session():
        _wake(team)
        for number in range(5):
            team.defer(lambda number=number: done.append(number), lane="one")
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(KeyError):
        with team.session():
            _wake(team)
            team.defer(lambda: {}["missing"])
    # an error of the session's own comes first; the jobs still ran
    with pytest.raises(RuntimeError, match="body"):
        with team.session():
            _wake(team)
            team.defer(lambda: {}["missing"])
            team.defer(lambda: done.append("ran"))
            raise RuntimeError("body")
    assert done[-1] == "ran"
    with team.session():  # and the team works on
        log = {}
        team.run([_where(log, "first"), _where(log, "second")])
        assert log["second"] != threading.get_ident()


def test_another_thread_does_not_finish_the_owners_jobs(team):
    if team.size < 2 or _threads._spin_functions() is None:
        pytest.skip("no helpers here")
    release, done = threading.Event(), []

    def job():
        assert release.wait(10)
        done.append("job")

    def other():
        team.finish_deferred()  # not this thread's session: returns at once
        done.append("other")

    with team.session():
        _wake(team)
        team.defer(job)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert done == ["other"]
        release.set()
        team.finish_deferred()
    assert done == ["other", "job"]


@needs_spin_locks
def test_deferred_products_of_the_handler_agree_with_numpy_and_keep_their_scratch_apart():
    # the handler's kept scratch arrays (e.g. of transposed products) are per thread
    # (a few rows times a transposed matrix: computed the other way round in one)
    h = NumpyHandler(np.float64)
    rng = np.random.RandomState(3)
    a, w = rng.randn(50, 300), rng.randn(900, 300)
    outs = [np.zeros((50, 900)) for _ in range(40)]
    mine = [np.zeros((50, 900)) for _ in range(40)]
    with h.session():
        _wake(_threads.team())
        for i, out in enumerate(outs):
            h.defer(lambda out=out: h.dot_mm(a, w, out, transb=True), lane=i % 2)
        for out in mine:
            h.dot_mm(a, w, out, transb=True)
        h.finish_deferred()
    for out in [*outs, *mine]:
        np.testing.assert_allclose(out, a @ w.T, rtol=1e-12)


def test_too_many_jobs_are_refused(team):
    if team.size < 2:
        pytest.skip("no helpers here")
    with team.session(), pytest.raises(ValueError, match="3 jobs for a team of 2"):
        team.run([lambda: None] * 3)


@needs_spin_locks
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_helpers(team):
    with team.session():
        team.run([lambda: None, lambda: None])
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if the helper ran the job
        code = 1
        try:
            log = {}
            with team.session():
                team.run([_where(log, "first"), _where(log, "second")])
            code = 0 if log["second"] != threading.get_ident() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


@needs_spin_locks
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_inside_a_session_leaves_it_and_has_its_own_helpers(team):
    with team.session():
        team.run([lambda: None, lambda: None])  # the helper spins now
        pid = os.fork()
        if pid == 0:  # child: no helper threads; leaving the session must not hang
            code = 1
            try:
                with team.session():
                    log = {}
                    team.run([_where(log, "first"), _where(log, "second")])
                    code = 0 if log["second"] != threading.get_ident() else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)  # (hangs here without the fix)
    assert os.WEXITSTATUS(status) == 0


@needs_spin_locks
@needs_main_thread
def test_keyboard_interrupt_in_a_session_arrives_when_it_ends_and_the_team_stays_sound(team):
    reached = []

    def interrupted_job():
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the helper works
        reached.append("job")

    def slow_job():
        threading.Event().wait(0.05)
        reached.append("helper")

    with pytest.raises(KeyboardInterrupt):
        with team.session():
            team.run([interrupted_job, slow_job])
            reached.append("session")
    assert reached == ["job", "helper", "session"]  # all ran, then the interrupt
    assert _cpu_seconds_while_sleeping() < 0.1  # the helper went back to sleep
    log = {}
    with team.session():
        team.run([_where(log, "first"), _where(log, "second")])
    assert log["second"] != threading.get_ident()


@contextlib.contextmanager
def _recording_usr1(label):
    """A SIGUSR1 handler that appends ``label`` to the yielded list; the previous
    handler is put back afterwards."""
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: got.append(label))
    try:
        yield got
    finally:
        signal.signal(signal.SIGUSR1, previous)


@needs_spin_locks
@needs_main_thread
def test_a_handler_installed_during_a_session_is_kept_and_gets_the_deferred_signal(team):
    with _recording_usr1("old") as got:
        with team.session():
            signal.raise_signal(signal.SIGUSR1)
            assert got == []  # deferred
            signal.signal(signal.SIGUSR1, lambda number, frame: got.append("new"))
        assert got == ["new"]
        signal.raise_signal(signal.SIGUSR1)
        assert got == ["new", "new"]  # the session did not put the old one back


@needs_spin_locks
@needs_main_thread
def test_every_deferred_signal_is_delivered_and_chained_handlers_still_work(team):
    with _recording_usr1("usr1") as got:
        with pytest.raises(KeyboardInterrupt):
            with team.session():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGUSR1)
        assert got == ["usr1"]  # delivered although the SIGINT handler raised first
        with team.session():  # a handler installed in a session that chains on
            chained = signal.getsignal(signal.SIGUSR1)
            signal.signal(signal.SIGUSR1, lambda n, f: (got.append("mine"), chained(n, f)))
        signal.raise_signal(signal.SIGUSR1)
        assert got == ["usr1", "mine", "usr1"]  # the chain reaches the original


@needs_spin_locks
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@needs_main_thread
def test_a_child_forked_during_a_session_gets_the_signal_handlers_back(team):
    original = signal.getsignal(signal.SIGINT)
    with team.session():
        assert signal.getsignal(signal.SIGINT) is not original  # deferred here
        pid = os.fork()
        if pid == 0:  # e.g. a multiprocessing worker: it never leaves the session
            os._exit(0 if signal.getsignal(signal.SIGINT) is original else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert signal.getsignal(signal.SIGINT) is original


def test_a_container_cpu_quota_caps_the_team(monkeypatch, tmp_path):
    root, groups = tmp_path / "cgroup", tmp_path / "self"
    monkeypatch.setitem(_threads._CGROUP, "root", str(root))
    monkeypatch.setitem(_threads._CGROUP, "self", str(groups))
    monkeypatch.delenv("BRAINSTORM_NUMPY_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert _threads.configured_size() == 8  # no cgroup information: the affinity
    # cgroup v2: the process's group and the groups above it, the smallest quota
    groups.write_text("0::/jobs/mine\n")
    mine = root / "jobs" / "mine"
    mine.mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    assert _threads.configured_size() == 8
    (mine / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert _threads.configured_size() == 2
    (root / "jobs" / "cpu.max").write_text("50000 100000\n")  # a parent's quota
    assert _threads.configured_size() == 1
    # cgroup v1
    groups.write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    v1 = root / "cpu,cpuacct" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.configured_size() == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert _threads.configured_size() == 8


def test_the_team_size_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRAINSTORM_NUMPY_THREADS", "3")
    assert _threads.configured_size() == 3
    monkeypatch.setenv("BRAINSTORM_NUMPY_THREADS", "0")
    assert _threads.configured_size() == 0
    monkeypatch.setenv("BRAINSTORM_NUMPY_THREADS", "two")
    with pytest.raises(ValueError, match="BRAINSTORM_NUMPY_THREADS"):
        _threads.configured_size()
    monkeypatch.delenv("BRAINSTORM_NUMPY_THREADS")
    assert _threads.configured_size() >= 1
    assert _threads.Team(1).size == 1


def test_without_a_team_the_session_changes_nothing(monkeypatch):
    monkeypatch.setitem(_threads._team, "team", None)
    monkeypatch.setenv("BRAINSTORM_NUMPY_THREADS", "0")
    before = _blas.set_threads(None)
    with NumpyHandler().session():
        assert _blas.set_threads(None) == before
        assert numpy_handler._active_team() is None


# --- the handler's session ------------------------------------------------------

shared_team = pytest.mark.skipif(
    _threads.team() is None or _threads.team().size < 2 or not _blas.threads_adjustable(),
    reason="no team of threads here",
)


@pytest.fixture
def team_runs(monkeypatch):
    """The number of jobs of every ``run`` of the process's team, as a list."""
    runs = []
    team = _threads.team()
    original = team.run
    monkeypatch.setattr(team, "run", lambda jobs: (runs.append(len(jobs)), original(jobs)))
    return runs


@shared_team
def test_the_blas_runs_on_one_thread_in_a_session_and_is_restored_after():
    before = _blas.set_threads(None)
    h = NumpyHandler()
    with h.session():
        assert _blas.set_threads(None) == 1
        with h.session():
            assert _blas.set_threads(None) == 1
        assert _blas.set_threads(None) == 1
    assert _blas.set_threads(None) == before


@shared_team
def test_large_products_are_split_in_a_session(team_runs):
    runs = team_runs
    rng = np.random.RandomState(0)
    h = NumpyHandler(np.float64)
    # split by rows, by columns, along the (long) reduction
    for m, k, n in ((300, 200, 250), (7, 300, 5000), (60, 4000, 50)):
        a, b = rng.randn(m, k), rng.randn(k, n)
        out = rng.randn(m, n)
        expected = out + a @ b
        with h.session():
            h.dot_add_mm(a, b, out)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        with h.session():
            h.dot_mm(b.T, a.T, out.T, transa=False, transb=False)  # into a transposed view
        np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    assert runs and all(count == 2 for count in runs)
    parameters, gradients = rng.randn(1 << 19), rng.randn(1 << 19)  # an SGD update
    expected = parameters - 0.1 * gradients
    before = len(runs)
    with h.session():
        h.mult_add_st(-0.1, gradients, parameters)
    assert len(runs) == before + 1
    np.testing.assert_allclose(parameters, expected, rtol=1e-12, atol=1e-12)
    with h.session():  # an output overlapping an input: computed alone, right
        x = rng.randn(300, 300)
        expected = x @ x
        h.dot_mm(x, x, x)
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)


@shared_team
def test_large_elementwise_ops_are_split_and_overlaps_are_kept_right(team_runs):
    runs = team_runs
    h = NumpyHandler(np.float64)
    x0 = np.random.RandomState(1).randn(600, 300)
    x, y = x0.copy(), np.empty_like(x0)
    with h.session():
        h.rel(x, y)
        h.tanh(x, x)  # in place
        h.mult_add_tt(y, y, y)  # the same view three times
        assert len(runs) == 3
        z = np.arange(601 * 300, dtype=np.float64).reshape(601, 300)
        expected = z[1:] + z[1:]
        h.add_tt(z[1:], z[1:], z[:-1])  # the output overlaps the inputs, shifted
        assert len(runs) == 3  # computed alone
        filled = np.zeros((400, 400))
        h.fill(filled, 0.5)
        assert len(runs) == 4
    assert np.all(filled == 0.5)
    np.testing.assert_array_equal(y, np.maximum(x0, 0) + np.maximum(x0, 0) ** 2)
    np.testing.assert_allclose(x, np.tanh(x0), rtol=1e-15)
    np.testing.assert_array_equal(z[:-1], expected)


def test_elementwise_ops_take_their_arguments_by_name_too():
    h = NumpyHandler(np.float64)
    src, dest = np.arange(6.0).reshape(2, 3), np.zeros((2, 3))
    h.copy_to(src=src, dest=dest)
    np.testing.assert_array_equal(dest, src)
    h.mult_tt(src, b=src, out=dest)
    np.testing.assert_array_equal(dest, src * src)


@shared_team
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_broadcasts_and_copies_are_split_in_a_session(team_runs, dtype):
    runs = team_runs
    h = NumpyHandler(dtype)
    rng = np.random.RandomState(2)
    a = rng.randn(1001, 300).astype(dtype)  # (an odd number of rows)
    sums = np.empty(300, dtype=dtype)
    row, column = rng.randn(1, 300).astype(dtype), rng.randn(1001, 1).astype(dtype)
    rows, columns = np.empty((1001, 300), dtype), np.empty((1001, 300), dtype)
    copied = np.empty((1001, 300), dtype)
    with h.session():
        h.sum_t(a, axis=0, out=sums)
        h.broadcast_t(row, 0, rows)
        h.broadcast_t(column, 1, columns)
        h.copy_to(a, copied)
        assert len(runs) == 4
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(
        sums, a.astype(np.float64).sum(axis=0), rtol=tolerance, atol=tolerance
    )
    np.testing.assert_array_equal(rows, np.broadcast_to(row, rows.shape))
    np.testing.assert_array_equal(columns, np.broadcast_to(column, columns.shape))
    np.testing.assert_array_equal(copied, a)


@shared_team
@pytest.mark.parametrize(
    "stride, padding, channels", [((1, 1), 2, 3), ((1, 1), 1, 9), ((2, 2), 1, 4)]
)
def test_convolution_chunks_shared_between_threads_agree_with_the_reference(
    monkeypatch, stride, padding, channels
):
    monkeypatch.setattr(numpy_handler, "_COLUMNS_PER_CHUNK", 1000)  # many chunks
    rng = np.random.RandomState(2)
    h = NumpyHandler(np.float64)
    inputs = rng.randn(9, 8, 8, channels)
    weights = rng.randn(5, 3, 3, channels)
    bias = rng.randn(5)
    expected = reference_conv2d_forward(inputs, weights, bias, padding, stride)
    outputs = np.zeros(expected.shape)
    deltas = rng.randn(*expected.shape)
    in_deltas = np.zeros(inputs.shape)
    weight_deltas, bias_deltas = np.zeros(weights.shape), np.zeros(bias.shape)
    with h.session():
        h.conv2d_forward_batch(inputs, weights, bias, outputs, padding, stride)
        h.conv2d_backward_batch(
            inputs, weights, padding, stride, in_deltas, deltas, weight_deltas, bias_deltas
        )
    np.testing.assert_allclose(outputs, expected, rtol=1e-10, atol=1e-10)
    want = reference_conv2d_backward(inputs, weights, padding, stride, deltas)
    for got, wanted in zip((in_deltas, weight_deltas, bias_deltas), want):
        np.testing.assert_allclose(got, wanted, rtol=1e-10, atol=1e-10)


@shared_team
def test_image_chunks_are_even_and_a_multiple_of_the_team_in_a_session():
    size = _threads.team().size
    with NumpyHandler().session():
        for n, per_image in ((100, 30720), (100, 84000), (7, 1 << 19), (1, 5)):
            chunks = numpy_handler._image_chunks(n, per_image)
            lengths = [stop - start for start, stop in chunks]
            assert sum(lengths) == n and chunks[0][0] == 0 and chunks[-1][1] == n
            assert max(lengths) - min(lengths) <= 1
            assert len(chunks) % size == 0 or len(chunks) == n
            assert max(lengths) <= max(1, numpy_handler._COLUMNS_PER_CHUNK // per_image)


@shared_team
def test_max_pooling_chunks_shared_between_threads_agree_with_the_reference(monkeypatch):
    monkeypatch.setattr(numpy_handler, "_CHUNK", 64)  # many chunks
    rng = np.random.RandomState(3)
    h = NumpyHandler(np.float64)
    inputs = rng.randn(11, 7, 7, 3)
    inputs[0, :3, :3] = 0.0  # ties: the first maximum wins
    window, padding, stride = (3, 3), 1, (2, 2)
    expected, expected_argmax = reference_maxpool2d_forward(inputs, window, padding, stride)
    outputs = np.zeros(expected.shape)
    argmax = np.zeros(expected.shape)
    deltas = rng.randn(*expected.shape)
    in_deltas = np.zeros(inputs.shape)
    with h.session():
        h.maxpool2d_forward_batch(inputs, window, outputs, padding, stride, argmax)
        h.maxpool2d_backward_batch(
            inputs, window, outputs, padding, stride, argmax, in_deltas, deltas
        )
    np.testing.assert_array_equal(outputs, expected)
    np.testing.assert_array_equal(argmax, expected_argmax)
    want = reference_maxpool2d_backward(inputs, expected_argmax, deltas)
    np.testing.assert_allclose(in_deltas, want, rtol=1e-12, atol=1e-12)


# --- packed products ------------------------------------------------------------


needs_packed = pytest.mark.skipif(
    not _packed.available(np.float32), reason="no packing routines in this BLAS"
)


@needs_packed
@pytest.mark.parametrize("in_session", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("k_widths", [[64, 17], [64, 600, 17]])  # (600: kernel calls of K <= 256)
def test_packed_block_products_agree_with_numpy(in_session, transpose, k_widths):
    rng = np.random.RandomState(4)
    h = NumpyHandler(np.float32)
    n_widths = [300, 45, 211]
    k, n = sum(k_widths), sum(n_widths)
    matrix = rng.randn(*((n, k) if transpose else (k, n))).astype(np.float32)
    a = rng.randn(40, k + 2).astype(np.float32)
    out = rng.randn(40, n + 3).astype(np.float32)
    expected = out.astype(np.float64)
    expected[:, :n] += a[:, :k].astype(np.float64) @ (matrix.T if transpose else matrix)
    starts = np.cumsum([0, *k_widths])
    a_blocks = [a[:, i:j] for i, j in zip(starts, starts[1:])]
    out_blocks = [out[:, :300], out[:, 300:345], out[:, 345:556]]
    prepared = h.prepare_matrix(matrix, transpose)
    assert isinstance(prepared, _packed.PackedMatrix)
    if in_session:
        with h.session():
            h.dot_add_blocks(a_blocks, prepared, out_blocks)
    else:
        h.dot_add_blocks(a_blocks, prepared, out_blocks)
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


@needs_packed
@pytest.mark.parametrize("in_session", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_products_of_many_rows_run_in_chunks_and_agree_with_numpy(
    in_session, dtype, monkeypatch
):
    if not _packed.available(dtype):
        pytest.skip(f"no packing routines for {np.dtype(dtype)}")
    monkeypatch.setattr(_packed, "CHUNK_BYTES", 4096)  # chunks of a few rows
    rng = np.random.RandomState(6)
    h = NumpyHandler(dtype)
    k_widths, n_widths = [20, 7], [70, 33]
    k, n = sum(k_widths), sum(n_widths)
    for rows in (61, 200):  # (61: the last chunk shorter than the others)
        # fresh matrices: in a session both threads pack the same blocks at once
        for _repeat in range(20):
            matrix = rng.randn(n, k).astype(dtype)
            a = rng.randn(rows, k).astype(dtype)
            out = rng.randn(rows, n + 1).astype(dtype)
            expected = out.astype(np.float64)
            expected[:, :n] += a.astype(np.float64) @ matrix.T.astype(np.float64)
            prepared = h.prepare_matrix(matrix, transpose=True)
            blocks = ([a[:, :20], a[:, 20:]], prepared, [out[:, :70], out[:, 70:103]])
            if in_session:
                with h.session():
                    h.dot_add_blocks(*blocks)
            else:
                h.dot_add_blocks(*blocks)
            tolerance = 2e-4 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
    assert len(_packed._row_chunks(200, k * np.dtype(dtype).itemsize, 2)) > 2


@shared_team
@needs_packed
@pytest.mark.parametrize("k_widths", [[128], [80, 48]])
def test_equal_output_blocks_go_whole_to_the_threads_and_agree_with_numpy(k_widths, monkeypatch):
    calls = []
    run_tasks = _packed._run_tasks
    monkeypatch.setattr(
        _packed,
        "_run_tasks",
        lambda kernels, tasks, batch, part: (
            calls.append((len(tasks), part)),
            run_tasks(kernels, tasks, batch, part),
        ),
    )
    rng = np.random.RandomState(8)
    h = NumpyHandler(np.float32)
    k, n = sum(k_widths), 4 * 192  # (enough FLOPs to share)
    matrix = rng.randn(n, k).astype(np.float32)
    a = rng.randn(50, k).astype(np.float32)
    outs = [rng.randn(50, 192).astype(np.float32) for _ in range(4)]
    expected = np.hstack(outs).astype(np.float64) + a.astype(np.float64) @ matrix.T
    a_blocks = np.split(a, np.cumsum(k_widths)[:-1], axis=1)
    with h.session():
        h.dot_add_blocks(a_blocks, h.prepare_matrix(matrix, transpose=True), outs)
    np.testing.assert_allclose(np.hstack(outs), expected, rtol=2e-4, atol=2e-4)
    # two threads, two whole output blocks (times the K blocks) each
    assert calls == [(2 * len(k_widths), None)] * 2


@needs_packed
def test_a_kept_plan_still_checks_the_addresses_of_every_call():
    # the plan of a layout (shapes, strides, dtypes) is kept per matrix; alignment
    # and overlaps depend on the addresses, so every call checks them again
    rng = np.random.RandomState(9)
    matrix = rng.randn(24, 6).astype(np.float32)
    packed = _packed.PackedMatrix(matrix, transpose=True)
    a, out = rng.randn(3, 6).astype(np.float32), np.zeros((3, 24), np.float32)
    assert _packed.add_products([a], packed, [out])
    np.testing.assert_allclose(out, a @ matrix.T, rtol=1e-5, atol=1e-5)
    assert len(packed._plans) == 1
    # the same layout at an odd address: not aligned, so not for the kernels
    raw = np.zeros(3 * 6 * 4 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, 18, offset=1).reshape(3, 6)
    assert not unaligned.flags.aligned and unaligned.strides == a.strides
    assert not _packed.add_products([unaligned], packed, [out])
    # (and an unaligned first call does not keep the layout from the kernels)
    fresh = _packed.PackedMatrix(matrix, transpose=True)
    assert not _packed.add_products([unaligned], fresh, [out])
    assert _packed.add_products([a], fresh, [out])
    # the same layout, the output overlapping the input
    inside_out = np.lib.stride_tricks.as_strided(out, shape=a.shape, strides=a.strides)
    assert not _packed.add_products([inside_out], packed, [out])
    assert len(packed._plans) == 1
    # ... or the matrix
    wide = rng.randn(24, 30).astype(np.float32)  # (the matrix in its first 6 columns)
    inside = _packed.PackedMatrix(wide[:, :6], transpose=True)
    assert not _packed.add_products([a], inside, [wide[:3, 6:30]])
    assert _packed.add_products([a], inside, [rng.randn(3, 24).astype(np.float32)])
    # ... or two outputs overlapping each other
    halves = _packed.PackedMatrix(matrix, transpose=True)
    both = np.zeros((3, 12), np.float32)
    assert _packed.add_products([a], halves, [both, np.zeros((3, 12), np.float32)])
    assert not _packed.add_products([a], halves, [both, both])
    # a read-only output: NumPy's own refusal, not a write behind its back
    frozen = np.zeros((3, 24), np.float32)
    frozen.flags.writeable = False
    assert not _packed.add_products([a], packed, [frozen])
    with pytest.raises(ValueError, match="read-only"):
        NumpyHandler(np.float32).dot_add_blocks([a], packed, [frozen])
    assert not frozen.any()


@needs_packed
def test_threads_packing_the_same_block_at_once_both_use_the_one_that_is_kept():
    # Each thread's tasks hold raw pointers into the packed block: a thread that
    # went on with its own copy, while the matrix kept the other one, would read
    # freed memory once its copy is gone.
    kernels = _packed.kernels_for(np.float32)
    both_packing = threading.Barrier(2, timeout=10)

    class Kernels:  # the real routines, with both threads inside the packing at once
        def __getattr__(self, name):
            return getattr(kernels, name)

        def pack_column_major(self, *args):
            both_packing.wait()
            return kernels.pack_column_major(*args)

        def pack_row_major(self, *args):
            both_packing.wait()
            return kernels.pack_row_major(*args)

    matrix = np.random.RandomState(7).randn(40, 30).astype(np.float32)
    prepared = _packed.PackedMatrix(matrix, transpose=True)
    got = [None, None]

    def pack(i):
        got[i] = prepared.packed_block(Kernels(), 0, 40, 0, 30)

    threads = [threading.Thread(target=pack, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = prepared._blocks[(0, 40, 0, 30)]
    assert got[0] is kept and got[1] is kept


def test_row_chunks_are_even_multiples_of_8_and_of_the_team(monkeypatch):
    monkeypatch.setattr(_packed, "CHUNK_BYTES", 1000)
    assert _packed._row_chunks(10, 100, 2) == [(0, 10)]  # 1000 bytes fit
    for batch, parts in ((61, 2), (200, 2), (203, 3), (5000, 4)):
        chunks = _packed._row_chunks(batch, 40, parts)
        assert chunks[0][0] == 0 and chunks[-1][1] == batch
        assert all(stop == start for (_, stop), (start, _) in zip(chunks, chunks[1:]))
        assert all((stop - start) % 8 == 0 for start, stop in chunks[:-1])
        assert all((stop - start) * 40 <= 1000 + 8 * 40 for start, stop in chunks)
        assert len(chunks) % parts == 0 or len(chunks) * 8 >= batch


def test_block_products_without_the_packing_routines(monkeypatch):
    monkeypatch.setitem(_packed._state, "loaded", True)
    monkeypatch.setitem(_packed._state, "kernels", {})
    assert not _packed.available(np.float32)
    rng = np.random.RandomState(5)
    h = NumpyHandler(np.float64)
    matrix, a, out = rng.randn(6, 9), rng.randn(4, 6), rng.randn(4, 9)
    expected = out + a @ matrix
    h.dot_add_blocks([a[:, :2], a[:, 2:]], h.prepare_matrix(matrix), [out[:, :5], out[:, 5:]])
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="do not fit"):
        h.dot_add_blocks([a], h.prepare_matrix(matrix), [out[:, :5]])


if sys.platform.startswith("linux"):

    def test_spin_locks_are_found_on_linux():
        assert _threads._spin_functions() is not None


@needs_packed
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_kernel_call_reduces_over_more_than_the_kernels_block(dtype, monkeypatch):
    # (the AVX2 double-precision kernel overruns a stack buffer beyond K = 256)
    kernels = _packed.kernels_for(dtype)
    calls = []
    original = kernels.kernel
    monkeypatch.setattr(kernels, "kernel", lambda *args: calls.append(args[2]) or original(*args))
    h = NumpyHandler(dtype)
    rng = np.random.RandomState(0)
    matrix, a = rng.randn(700, 300).astype(dtype), rng.randn(30, 700).astype(dtype)
    out = np.zeros((30, 300), dtype)
    h.dot_add_blocks([a], h.prepare_matrix(matrix), [out])
    expected = a.astype(np.float64) @ matrix.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)
    assert calls and max(calls) <= _packed.MAX_REDUCTION == 256


def test_packed_routines_of_an_unchecked_cpu_are_not_used():
    # OpenBLAS told to use its Sandy Bridge kernels (whose self-test crashed): the
    # handler keeps ordinary products and still computes
    code = (
        "import numpy as np\n"
        "from brainstorm.handlers import _packed\n"
        "from brainstorm.handlers.numpy_handler import NumpyHandler\n"
        "assert _packed.kernels_for(np.float32) is None\n"
        "h = NumpyHandler(np.float32)\n"
        "x, w = np.ones((2, 6, 6, 32), np.float32), np.ones((16, 3, 3, 32), np.float32)\n"
        "out = np.zeros((2, 4, 4, 16), np.float32)\n"
        "h.conv2d_forward_batch(x, w, None, out, 0, (1, 1))\n"
        "assert (out == 288).all()\n"
    )
    env = dict(os.environ, OPENBLAS_CORETYPE="SandyBridge")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_threads_asking_for_the_kernels_at_once_wait_for_the_one_loading_them(monkeypatch):
    # (a deferred job's first packed product may come while the caller loads them)
    import time

    expected = _packed.kernels_for(np.float32)
    if expected is None:
        pytest.skip("OpenBLAS's packing routines and kernels are not usable here")
    fresh = {"loaded": False, "kernels": {}, "lock": threading.RLock()}
    monkeypatch.setattr(_packed, "_state", fresh)
    slow_width = _packed._panel_width

    def panel_width(*args, **kwargs):
        time.sleep(0.05)  # the window in which the other thread asks
        return slow_width(*args, **kwargs)

    monkeypatch.setattr(_packed, "_panel_width", panel_width)
    found = {}

    def ask(name):
        found[name] = _packed.kernels_for(np.float32)

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(30)
    assert found["a"] is not None and found["b"] is found["a"]


@needs_spin_locks
def test_the_debug_handler_passes_deferred_jobs_on_to_the_handler_it_wraps():
    # so that its results stay those of the wrapped handler (a job runs on one thread)
    from brainstorm.handlers import DebugHandler

    inner = NumpyHandler(np.float32)
    h = DebugHandler(inner)
    seen = {}

    def job():
        seen["thread"] = threading.get_ident()
        seen["active"] = _threads.team().active

    with inner.session():
        _wake(_threads.team())
        h.defer(job, lane="x")
        h.finish_deferred()
    assert seen["active"] is False
    with pytest.raises(TypeError, match="lane must be hashable"):
        h.defer(job, lane={})
