"""collector/worker.py: every way a worker can end becomes an Outcome that
says what happened (a result, or the reason there is none), the worker
never outlives its budget, and it holds no privilege while it runs."""
from __future__ import annotations

import os
import signal
import time

import pytest

from collector import worker

LIMITS = dict(user="nobody", memory=1 << 30, cpu=60, timeout=10.0)


def run(task, keep=(), **limits) -> worker.Outcome:
    ident, errors = worker.identity(None, None, "nobody")
    assert not errors
    return worker.run(task, ident, worker.Limits(**dict(LIMITS, **limits)), set(keep))


def test_a_result_comes_back_with_the_credentials_it_ran_with():
    kept, other = os.open("/dev/null", os.O_RDONLY), os.open("/dev/null", os.O_RDONLY)

    def task(arrived):
        arrived()
        return {"euid": os.geteuid(), "fds": [fd for fd in (kept, other) if _is_open(fd)]}
    try:
        got = run(task, keep=[kept])
    finally:
        os.close(kept)
        os.close(other)
    assert got.error is None and got.arrived, got
    assert got.result["fds"] == [kept], "only the fds it was given are open in the worker"
    assert got.status["CapEff"] == got.status["CapPrm"] == "0" * 16, got.status
    assert got.status["NoNewPrivs"] == "1" and got.status["Dumpable"] == "0", got.status
    if os.geteuid() == 0:
        assert got.result["euid"] == 65534 and got.status["Uid"] == "65534 65534 65534 65534"


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_root_input_runs_as_the_dedicated_user_and_others_as_themselves():
    assert worker.identity(0, 0, "nobody")[0] == worker.Identity(65534, 65534, 65534)
    assert worker.identity(1000, 100, "nobody")[0] == worker.Identity(1000, 100, 65534)
    ident, errors = worker.identity(1000, 100, "no-such-user-here")
    assert ident.real == 65534 and "not a user" in errors[0]
    ident, errors = worker.identity(1000, 100, "root")
    assert ident.real == 65534 and "must not be root" in errors[0]


def test_a_hang_after_the_input_arrived_is_killed_at_the_timeout():
    t0 = time.monotonic()
    got = run(lambda arrived: (arrived(), time.sleep(30)), timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert got.result is None and "worker.timeout (0.3 s)" in got.error, got


def test_out_of_memory():
    got = run(lambda arrived: {"n": len(bytearray(256 << 20))}, memory=64 << 20)
    assert got.result is None and "ran out of memory (worker.memory, 64 MiB)" in got.error, got


def test_out_of_cpu_time():
    def spin(arrived):
        while True:
            pass
    got = run(spin, cpu=1)
    assert got.result is None and "CPU time (worker.cpu, 1 s)" in got.error, got


@pytest.mark.parametrize("task, why", [
    (lambda arrived: os.kill(os.getpid(), signal.SIGSEGV), "died of SIGSEGV"),
    (lambda arrived: 1 / 0, "internal error in the worker: ZeroDivisionError"),
    (lambda arrived: os._exit(0), "not a report"),
    (lambda arrived: [1, 2], "not a report"),
])
def test_a_worker_that_dies_or_answers_garbage(task, why):
    got = run(task)
    assert got.result is None and why in got.error, got


def test_an_answer_too_big_is_cut_off(monkeypatch):
    monkeypatch.setattr(worker, "MAX_RESULT", 1 << 20)
    got = run(lambda arrived: {"x": "y" * (4 << 20)})
    assert got.result is None and "exceeded 1 MiB" in got.error, got
