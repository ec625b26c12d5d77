"""The control socket's framing and the service's checks of a request."""
from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess

import pytest

from collector import cli, errors
from collector.service import clients, control


def pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def test_a_message_and_its_fds_arrive_whole():
    a, b = pair()
    r, w = os.pipe()
    try:
        big = {"x": "y" * (1 << 19)}  # beyond one socket buffer
        import threading
        t = threading.Thread(target=control.send, args=(a, big, (r,)))
        t.start()
        got, fds = control.receive(b, control.MAX_ANSWER)
        t.join()
        assert got == big and len(fds) == 1
        os.write(w, b"!")
        assert os.read(fds[0], 1) == b"!"  # the very pipe
        os.close(fds[0])
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize("raw, why", [
    (struct.pack("!I", control.MAX_REQUEST + 1), "bytes"),
    (struct.pack("!I", 10) + b"abc", "cut short"),
    (struct.pack("!I", 3) + b"abc", "not a JSON object"),
    (struct.pack("!I", 2) + b"[]", "not a JSON object"),
    (b"\x00", "cut short"),
])
def test_what_is_not_a_message_is_refused(raw, why):
    a, b = pair()
    try:
        a.sendall(raw)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(ValueError, match=why):
            control.receive(b, control.MAX_REQUEST)
    finally:
        a.close()
        b.close()


def command(argv, env=None, umask=0o022):
    return clients.command_args({"argv": argv, "env": {} if env is None else env,
                                 "umask": umask}, cli.parser)


def test_a_command_line_is_checked_and_parsed():
    args, answer = command(["attach", "--freeze", "42"])
    assert answer is None and args.pid == 42 and args.freeze is True
    for local in (["attach", "--no-service", "42"], ["attach", "--stop-timeout", "11", "42"],
                  ["attach", "--symbolize-budget", "31", "42"], ["list"]):
        assert command(local) == (None, {"local": True}), local
    args, answer = command(["attach", "--bogus", "42"])
    assert args is None and answer["exit"] == 2 and "--bogus" in answer["stderr"]
    args, answer = command(["attach", "--help"])
    assert args is None and answer["exit"] == 0 and "usage: collector attach" in answer["stdout"]
    for bad in ({"argv": [42]}, {"argv": "attach 42"}, {"argv": ["x"] * 257},
                {"env": {"A": 1}}, {"env": []}, {"env": {"A=B": "c"}}, {"env": {"": "c"}},
                {"env": {"A": "b\0c"}}, {"umask": 0o1000}, {"umask": True}):
        given = {"argv": ["attach", "42"], "env": None, "umask": 0o022, **bad}
        with pytest.raises(errors.UsageError):
            command(**given)


def test_a_core_file_is_served_alone_and_named_for_the_client_to_open():
    args, answer = command(["core", "--symbolize-budget", "0", "dir/core.1"])
    assert answer is None and clients.started(args) == {"started": True, "open": "dir/core.1"}
    assert clients.started(command(["attach", "42"])[0]) == {"started": True}
    for local in (["core", "--no-service", "c"], ["core", "--from-kernel", "P=1"], ["core"],
                  ["core", "a", "b"], ["core", "--symbolize-budget", "31", "c"]):
        assert command(local) == (None, {"local": True}), local


def test_a_core_file_is_read_by_the_service_only_where_it_sees_the_clients_files():
    me = os.getpid()
    assert clients.why_not_open(clients.Peer(me, os.geteuid(), os.getegid())) is None
    assert "cannot be looked at" in clients.why_not_open(clients.Peer(999999999, 0, 0))
    if os.geteuid() != 0:
        assert "runs as uid" in clients.why_not_open(clients.Peer(me, os.geteuid() + 1, 0))


def test_who_may_ask_for_what():
    me = os.getpid()
    assert clients.why_not_trace(clients.Peer(me, 0, 0), 1) is None  # root: anything
    if os.geteuid() == 0:
        why = clients.why_not_trace(clients.Peer(me, 65534, 65534), me)
        assert why == f"pid {me} runs as another user"
    with pytest.raises(errors.NotPermitted):
        clients.core_request({"kernel": {"P": me}}, [0], clients.Peer(me, 1000, 1000))
    with pytest.raises(errors.UsageError, match="not dumping core"):
        clients.core_request({"kernel": {"P": me}}, [0], clients.Peer(me, 0, 0))
    with pytest.raises(errors.UsageError, match="LETTER"):
        clients.core_request({"kernel": {"PP": 1}}, [0], clients.Peer(me, 0, 0))


class _Images:
    def begin(self, keep: int) -> None:
        pass


@pytest.mark.parametrize("dies", [False, True])
def test_a_pid_that_may_change_hands_during_the_capture_gives_no_report(monkeypatch, dies):
    """The process a non-root client named may die between the credential
    check and the capture, and its pid go to a process the client may not
    trace: a capture after which the named process is gone is not reported."""
    target = subprocess.Popen(["sleep", "60"])
    taken = object()

    def capture(pid, *_):
        assert pid == target.pid
        if dies:
            target.kill()
            target.wait()  # reaped: the pid is free for the next process
        return taken

    monkeypatch.setattr(clients, "why_not_trace", lambda asker, pid: None)
    monkeypatch.setattr(clients, "capture", capture)
    monkeypatch.setattr(clients, "build", lambda got, *_: {"timings": {}, "of": got})
    args = argparse.Namespace(pid=target.pid, stack_window=4096, stop_timeout=1.0,
                              freeze=False, max_frames=None, symbolize_budget=0)
    outlet = argparse.Namespace(images=_Images(), symbolize=lambda report, budget: None)
    try:
        if dies:
            with pytest.raises(errors.NoSuchProcess, match="exited while"):
                clients.take_attach(args, clients.Peer(os.getpid(), 65534, 65534), outlet, 0)
        else:
            report = clients.take_attach(args, clients.Peer(os.getpid(), 65534, 65534), outlet, 0)
            assert report["of"] is taken
    finally:
        target.kill()
        target.wait()


def test_the_service_warms_the_system_libraries_it_maps():
    """libc's tables and DWARF are decoded once in the service, before any
    fork: each handler and worker then finds them in its image cache."""
    from collector.service.serve import warm
    from unwinder.modules import ImageCache
    images = ImageCache()
    warm(images)
    libc = [image for (path, _), image in images.named.items() if "/libc.so" in path]
    assert len(libc) == 1 and libc[0]._symbols is not None and len(libc[0]._symbols) > 1000
    lines = libc[0]._lines  # DWARF, where libc's debug file is installed
    if lines:
        info = lines._dwarf.info
        assert info._raw is None or info._fed == len(info._raw)  # inflated whole


@pytest.mark.parametrize("value", [
    {}, {"op": "command", "argv": ["attach", "-v", "é\n\"\\\u2028\U0001f600"], "umask": 0o22},
    {"a": [1, -2, 3.5, True, False, None, [], {}], "b": {"c": "d"}}, [1 << 70], "x", 0.1])
def test_messages_read_back_as_json_writes_them(value):
    """control's own encoder and decoder (json's C parts) agree with json."""
    import json
    assert json.loads(control.dumps(value)) == value
    assert control.loads(json.dumps(value).encode()) == value
    assert control.loads(control.dumps(value).encode()) == value


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1} x', b"NaN", b"[Infinity]", b"\xff",
                                 b"[" * 100000, b'{"a": 01}', b"'a'"])
def test_what_is_not_json_reads_as_none(raw):
    assert control.loads(raw) is None


def test_only_plain_values_are_written():
    for bad in ({1: "a"}, {"a": b"x"}, float("nan"), object()):
        with pytest.raises(TypeError):
            control.dumps(bad)
