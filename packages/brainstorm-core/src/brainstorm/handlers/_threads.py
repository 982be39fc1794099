"""The NumpyHandler's own threads for its matrix products.

OpenBLAS shares each product between its threads and lets them spin for about
0.1 s after every product, waiting for the next one. That suits large
products; it does not suit the many small products of a recurrent layer (one
per time step, a few dozen rows each), nor products we want to split our own
way (:mod:`brainstorm.handlers._packed`). Two spinning pools on two cores
make each other wait, and a pool that sleeps between products pays the
wake-up of a sleeping thread (tens of microseconds on a virtual machine) for
every product.

A :class:`Team` is the caller plus ``size - 1`` helper threads. From the
first shared piece of work in a *session* (:meth:`Team.session`, one forward
or backward pass of a network, or one update of its parameters) to its end,
the helpers wait for work by spinning on a spin lock of the C library
(``pthread_spin_lock`` through :mod:`ctypes`, which releases the GIL), so that
handing them a piece of work costs well under a microsecond; otherwise they
sleep, so a session without large work (a small network) costs nothing.
Spinning threads need cores of their own: with more busy threads than cores
(several training processes on one machine, say), set
``BRAINSTORM_NUMPY_THREADS`` to share them out. During a session
the BLAS library itself runs on one thread (its own pool stays idle and
soon sleeps), and the handler splits large products between the team
(:meth:`Team.run`), each thread computing its share with a one-thread BLAS
call.

The team is used only from the thread that opened the session: other
threads, nested calls and jobs running on a helper compute serially. A forked
child (even one forked inside a session) starts its own helpers. Signals with
a Python handler (Ctrl-C's KeyboardInterrupt) that arrive during a session
opened in the main thread are handled when it ends, so that a pass is never
left half-computed with a helper still writing into it. Without ``pthread_spin_lock`` (not Linux), with
a single usable CPU, or with the environment variable
``BRAINSTORM_NUMPY_THREADS=1`` there are no helpers and everything runs on the
calling thread; ``BRAINSTORM_NUMPY_THREADS=0`` turns the team off and leaves
the threads to the BLAS library as before; ``BRAINSTORM_NUMPY_THREADS=n``
uses ``n`` threads (default: the number of CPUs this process may use).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import signal
import threading
import weakref

__all__ = ["Team", "team"]

#: Bytes between two spin locks (each on its own cache line).
_LINE = 128

_libc = {"loaded": False, "functions": None}


def _spin_functions():
    """``(init, lock, unlock)`` of the C library's spin locks, or None."""
    if not _libc["loaded"]:
        _libc["loaded"] = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            init, lock, unlock = (
                lib.pthread_spin_init,
                lib.pthread_spin_lock,
                lib.pthread_spin_unlock,
            )
        except (OSError, AttributeError):
            return None
        init.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lock.argtypes = unlock.argtypes = [ctypes.c_void_p]
        init.restype = lock.restype = unlock.restype = ctypes.c_int
        _libc["functions"] = (init, lock, unlock)
    return _libc["functions"]


def configured_size():
    """Threads the team should have: ``BRAINSTORM_NUMPY_THREADS`` or the CPUs this
    process may use (its affinity, and a container's CPU quota); 0: no team, the
    BLAS library keeps its own threads."""
    value = os.environ.get("BRAINSTORM_NUMPY_THREADS", "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            raise ValueError(
                f"BRAINSTORM_NUMPY_THREADS must be a whole number, got {value!r}"
            ) from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return cpus if quota is None else max(1, min(cpus, quota))


#: Where the cgroup file systems and this process's groups are (see _cgroup_cpu_quota).
_CGROUP = {"root": "/sys/fs/cgroup", "self": "/proc/self/cgroup"}


def _cgroup_cpu_quota():
    """The CPUs this process's control groups may use (the smallest CPU quota of
    its group and the groups above it, rounded up), or None if unlimited or
    unknown: spinning threads beyond the quota would only throttle the group."""
    root = _CGROUP["root"]
    try:
        with open(_CGROUP["self"]) as f:
            lines = [line.strip().split(":", 2) for line in f if line.strip()]
    except OSError:
        lines = []
    quotas = []
    for fields in lines:
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2
            folders = [os.path.join(root, path.lstrip("/"))]
            quota_of = _cgroup2_quota
        elif "cpu" in controllers.split(","):  # cgroup v1
            folders = [os.path.join(root, name, path.lstrip("/")) for name in (controllers, "cpu")]
            quota_of = _cgroup1_quota
        else:
            continue
        for folder in dict.fromkeys(folders):
            while True:  # this group and every group above it
                quota = quota_of(folder)
                if quota is not None:
                    quotas.append(quota)
                if os.path.normpath(folder) == os.path.normpath(root) or folder in ("", "/"):
                    break
                folder = os.path.dirname(os.path.normpath(folder))
                if not folder.startswith(os.path.normpath(root)):
                    break
    return min(quotas) if quotas else None


def _cgroup2_quota(folder):
    try:
        with open(os.path.join(folder, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _cgroup1_quota(folder):
    try:
        with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
            quota = int(f.read().strip())
        with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
            period = int(f.read().strip())
        return None if quota <= 0 else max(1, -(-quota // period))
    except (OSError, ValueError, ZeroDivisionError):
        return None


class _Helper:
    """One helper thread: spins on ``go`` during a session, runs ``job``, unlocks ``done``."""

    def __init__(self, index, functions):
        init, self._lock, self._unlock = functions
        self._memory = ctypes.create_string_buffer(3 * _LINE)
        base = ctypes.addressof(self._memory)
        base += -base % _LINE
        self.go, self.done = ctypes.c_void_p(base), ctypes.c_void_p(base + _LINE)
        if init(self.go, 0) or init(self.done, 0):
            raise OSError("pthread_spin_init failed")
        self._lock(self.go)  # both held: the helper waits for go, the caller for done
        self._lock(self.done)
        self.wake = threading.Semaphore(0)
        self.job = None
        self.error = None
        self.thread = threading.Thread(
            target=self._serve, name=f"brainstorm-numpy-{index}", daemon=True
        )
        self.thread.start()

    def _serve(self):
        lock, unlock = self._lock, self._unlock
        while True:
            self.wake.acquire()  # asleep between sessions
            while True:
                lock(self.go)  # spins in C, without the GIL
                job, self.job = self.job, None
                if job is None:  # the session is over
                    unlock(self.done)
                    break
                try:
                    job()
                except BaseException as error:  # handed to the caller
                    self.error = error
                unlock(self.done)

    def start(self, job):
        self.error = None
        self.job = job
        self._unlock(self.go)

    def wait(self):
        self._lock(self.done)
        error, self.error = self.error, None
        return error


class Team:
    """The calling thread plus ``size - 1`` helpers (see the module's documentation).

    Args:
        size: int, the number of threads including the caller; 1 (or no spin
            locks on this system) means no helpers.
    """

    def __init__(self, size):
        self.size = max(1, int(size))
        self._functions = _spin_functions() if self.size > 1 else None
        if self._functions is None:
            self.size = 1
        self._helpers = []
        self._pid = None
        self._owner = None  # the thread whose session is open
        self._depth = 0
        self._running = False  # inside run(): nested calls compute serially
        self._awake = False  # whether the helpers spin (this session ran work on them)
        self._guard = threading.Lock()
        self._reset_later()
        _teams.add(self)

    def _reset_later(self):
        """No deferred work (see :meth:`defer`)."""
        self._later = collections.deque()  # (lane, job) not started yet
        self._later_lock = threading.Lock()
        self._busy_lanes = set()  # lanes of the deferred jobs running now
        self._later_error = None  # the first error of a deferred job
        self._drainer = None  # the helper working through the deferred jobs
        self._drain_over = False  # set by the drainer when it found nothing to do

    def __repr__(self):
        return f"Team(size={self.size})"

    @property
    def active(self):
        """Whether :meth:`run` would share work now (a session of this thread is open)."""
        # (a forked child's teams are reset at the fork: _depth 0)
        return self._depth > 0 and self._owner == threading.get_ident() and not self._running

    @contextlib.contextmanager
    def session(self, on_open=None, on_close=None):
        """Keep the helpers spinning while the block runs (re-entrant).

        ``on_open()`` runs when the outermost session of this thread opens and
        ``on_close()`` when it closes (the handler sets the BLAS library's
        threads there). In any other thread than the one whose session is
        open, the block just runs.
        """
        if self.size == 1:
            yield self
            return
        me = threading.get_ident()
        if self._depth and self._owner == me:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        # Python runs signal handlers (KeyboardInterrupt!) between any two
        # bytecodes of the main thread; one in the middle of a hand-off would leave
        # a helper unaccounted for. So they wait until the session is over.
        with _signals_deferred():
            guard = self._guard
            if not guard.acquire(blocking=False):  # another thread's session
                yield self
                return
            try:
                if self._pid != os.getpid():  # first use, or a forked child
                    self._helpers = [_Helper(i, self._functions) for i in range(1, self.size)]
                    self._pid = os.getpid()
                self._owner, self._depth = me, 1
                self._awake = False  # the helpers are woken by the first run()
                failed = False
                try:
                    if on_open is not None:
                        on_open()
                    yield self
                except BaseException:
                    failed = True
                    raise
                finally:
                    # deferred jobs left over (a pass that failed halfway, say) run
                    # now: none may outlive the session
                    late_error = None
                    try:
                        if self._pid == os.getpid():
                            self.finish_deferred()
                    except BaseException as error:
                        late_error = None if failed else error
                    self._reset_later()
                    self._depth = 0
                    self._owner = None
                    if self._awake and self._pid == os.getpid():
                        for helper in self._helpers:  # job None: back to sleep
                            helper.start(None)
                        for helper in self._helpers:
                            helper.wait()
                    self._awake = False
                    if on_close is not None:
                        on_close()
                    if late_error is not None:
                        raise late_error
            finally:
                guard.release()

    def _forget_helpers(self):
        """In a forked child: the helper threads are gone; start afresh on next use."""
        self._helpers = []
        self._pid = None
        self._owner = None
        self._depth = 0
        self._running = False
        self._awake = False
        self._guard = threading.Lock()
        self._reset_later()

    def _wake(self):
        """Let the helpers spin (the first shared work of this session)."""
        if not self._awake:
            for helper in self._helpers:
                helper.job = None
                helper.wake.release()
            self._awake = True

    # -- deferred work: jobs a helper runs while the caller goes on -------------------

    def defer(self, job, lane=None):
        """Run ``job()`` on a helper while this thread goes on (see :meth:`finish_deferred`).

        In an open session of this thread whose helpers are awake (it had
        shared work), the job is queued and the last helper works through
        the queue whenever it is not needed otherwise: :meth:`run` then
        shares its work between the other threads (or runs it all here), so
        the work of both goes on at once. In a session whose helpers still
        sleep (a small network), the job runs here and now, on this thread
        alone; elsewhere (no session, within a job, another thread, no
        helpers) it just runs here and now.

        Jobs of one ``lane`` (any hashable; None: a lane of its own) run in
        the order they were deferred and never at the same time; jobs of
        different lanes may. The work inside a job runs on one thread (its
        handler operations do not share it), wherever it runs, so that its
        results never depend on which thread took it. A job must write only
        what nothing reads or writes before :meth:`finish_deferred` (save
        later jobs of its lane). A job that defers a job runs that one at once.

        Raises:
            TypeError: ``lane`` is not hashable.
        """
        try:
            hash(lane)
        except TypeError:
            raise TypeError(
                f"defer: the lane must be hashable, got {type(lane).__name__}"
            ) from None
        if not self.active or not self._helpers:
            job()
        elif not self._awake:
            with self._serially():
                job()
        else:
            with self._later_lock:
                self._later.append((object() if lane is None else lane, job))
            self._start_drainer()

    @contextlib.contextmanager
    def _serially(self):
        """Handler operations in the block run on this thread alone (as in a job)."""
        running, self._running = self._running, True
        try:
            yield
        finally:
            self._running = running

    def finish_deferred(self):
        """Wait until every deferred job has run, taking a share of them here.

        Re-raises the first exception raised by a deferred job (the others
        still ran).
        """
        if not self.active:  # (another thread's session, or within a job)
            return
        if self._drainer is None and not self._later:
            self._raise_later_error()
            return
        try:
            with self._serially():  # (jobs here run on one thread)
                while True:
                    with self._later_lock:
                        item = self._pick_later()
                    if item is not None:
                        self._start_drainer()  # the helper takes the next one
                        self._run_later(item)
                    elif self._drainer is not None:
                        # what is left is in the lane of the drainer's job: it runs it all
                        self._collect_drainer(wait=True)
                    else:
                        break
        finally:
            self._collect_drainer(wait=True)
        self._raise_later_error()

    def _raise_later_error(self):
        error, self._later_error = self._later_error, None
        if error is not None:
            raise error

    def _pick_later(self):
        """The first queued job whose lane is free, marked busy, or None (holding the lock)."""
        for index, (lane, job) in enumerate(self._later):
            if lane not in self._busy_lanes:
                del self._later[index]
                self._busy_lanes.add(lane)
                return lane, job
        return None

    def _run_later(self, item):
        lane, job = item
        try:
            job()
        except BaseException as error:
            with self._later_lock:
                self._later_error = self._later_error or error
        finally:
            with self._later_lock:
                self._busy_lanes.discard(lane)

    def _drain(self):
        """On the drainer: run queued jobs until none is free to run."""
        try:
            while True:
                with self._later_lock:
                    item = self._pick_later()
                    if item is None:  # (decided under the lock that defer() takes)
                        self._drain_over = True
                        return
                self._run_later(item)
        except BaseException:  # (never left unaccounted for)
            self._drain_over = True
            raise

    def _collect_drainer(self, wait=False):
        """Take the drainer back once it is done (``wait``: until it is); True if free."""
        helper = self._drainer
        if helper is None:
            return True
        if not (wait or self._drain_over):
            return False
        error = helper.wait()
        if error is not None:
            self._later_error = self._later_error or error
        self._drainer = None
        return True

    def _start_drainer(self):
        """Set the last helper to the queue unless it is at it already (only from
        the thread whose session is open)."""
        if not self._collect_drainer():
            return
        with self._later_lock:
            if not self._later:
                return
            self._drain_over = False
        self._wake()
        self._drainer = self._helpers[-1]
        self._drainer.start(self._drain)

    def run(self, jobs):
        """Run the callables ``jobs``: ``jobs[0]`` here, the others on helpers.

        With no session open in this thread (or called from within a job),
        all run here, one after the other. Jobs must not depend on each
        other's results. The first exception raised by a job is re-raised
        after all of them finished.
        """
        jobs = list(jobs)
        if not self.active or len(jobs) <= 1:
            for job in jobs:
                job()
            return
        if len(jobs) > self.size:
            raise ValueError(f"Team.run: {len(jobs)} jobs for a team of {self.size}")
        self._wake()
        self._collect_drainer()
        helpers = [helper for helper in self._helpers if helper is not self._drainer]
        self._running = True
        started = []
        try:
            for helper, job in zip(helpers, jobs[1:]):
                helper.start(job)
                started.append(helper)
            error = None
            # jobs[0], and those no free helper took (one is at the deferred jobs)
            for job in [jobs[0], *jobs[1 + len(started) :]]:
                try:
                    job()
                except BaseException as raised:
                    error = error or raised
            for helper in started:
                failed = helper.wait()
                error = error or failed
            if error is not None:
                raise error
        finally:
            self._running = False
        if self._later:
            self._start_drainer()


_teams = weakref.WeakSet()


def _after_fork_in_child():
    for team in list(_teams):
        team._forget_helpers()
    for deferral in list(_open_deferrals):  # the child never leaves those sessions
        deferral.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: The signal numbers, as ints (the ``signal`` module's wrappers make enums of
#: them, which costs more than the rest of a session).
_SIGNALS = tuple(int(number) for number in signal.valid_signals())
try:
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal
except ImportError:  # not CPython
    _getsignal, _setsignal = signal.getsignal, signal.signal

#: The deferrals of sessions open now (a forked child puts their handlers back).
_open_deferrals = []


class _Deferral:
    """Python signal handlers held back while the main thread is in a session.

    :meth:`open` replaces every callable Python handler by :attr:`handler`,
    which records the signals; :meth:`close` puts the handlers back (unless
    the block installed its own meanwhile) and hands the recorded signals to
    the handlers then in place, in order. After closing, a recorder that is
    still installed somewhere (e.g. saved and chained to by a handler that
    was installed during the session) forwards to the original handler.
    """

    def __init__(self):
        self.originals = {}
        self.caught = []
        self.recording = True
        self.handler = self._receive  # one bound method, compared with `is`

    def _receive(self, number, frame):
        if self.recording:
            self.caught.append((number, frame))
            return
        original = self.originals.get(number)
        if callable(original):
            original(number, frame)

    def open(self):
        _open_deferrals.append(self)
        for number in _SIGNALS:
            try:
                handler = _getsignal(number)
            except (OSError, ValueError):
                continue
            if callable(handler):
                self.originals[number] = handler
                _setsignal(number, self.handler)

    def _put_back(self):
        self.recording = False  # from now on, the recorder forwards
        if self in _open_deferrals:
            _open_deferrals.remove(self)
        for number, original in self.originals.items():
            if _getsignal(number) is self.handler:
                _setsignal(number, original)

    def close(self):
        try:
            self._put_back()
        finally:
            caught, self.caught = self.caught, []
            error = None
            for number, frame in caught:  # every one, even after one raised
                handler = _getsignal(number)
                if handler is self.handler:
                    handler = self.originals.get(number)
                if callable(handler):
                    try:
                        handler(number, frame)
                    except BaseException as raised:
                        error = error or raised
            if error is not None:
                raise error

    def forget(self):
        """In a forked child: put the handlers back and drop what was recorded."""
        self.caught = []
        self._put_back()


@contextlib.contextmanager
def _signals_deferred():
    """Hold back the Python signal handlers of the main thread while the block runs.

    Every signal with a Python handler (SIGINT's raises KeyboardInterrupt) that
    arrives meanwhile is recorded and handed to its handler when the block
    ends, in order (see :class:`_Deferral`). In other threads, which never run
    signal handlers, the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferral = _Deferral()
    try:
        deferral.open()
        yield
    finally:
        deferral.close()


_team = {"team": None}


def team():
    """The process's :class:`Team` (created on first use), or None when
    ``BRAINSTORM_NUMPY_THREADS`` is 0."""
    if _team["team"] is None:
        size = configured_size()
        if size == 0:
            return None
        _team["team"] = Team(size)
    return _team["team"]
