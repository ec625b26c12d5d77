"""A crash storm through the real kernel: CRASHES crashes in SECONDS (by
default 1,000 in 60 s), most of them the same crash, handled by `collector
serve` ('@' socket mode, '@@' request mode) or by the pipe handler
(`core --from-kernel` as `install-handler` runs it, core_pipe_limit 16),
alone or handing each core to a running `collector serve --control`
(pipe-service). Prints the crashes made, the reports delivered, the
crashes counted as suppressed (the local store), those the kernel skipped
(no trace anywhere: made - delivered - suppressed), the handlers' CPU per
crash (on average, for a delivered one and for a suppressed one) and the
wall time.

CPU: socket modes, the server's and its children's (os.wait4 on the server,
less what it had spent when it started listening), per connection from
the cpu_ms its handler logs; pipe mode, each handler's own and its
children's, from exec to exit (wait4 in a small C wrapper in the handler
script, to the microsecond: /usr/bin/time prints user and system time
each cut down to 10 ms, which hid 5-10 ms of every handler). Neither
counts the kernel's writing of the core: it runs in the crashing task, in
every mode alike. Needs root; takes the core_pattern lock of
tests/e2e/corepattern.py and puts core_pattern back, also on failure.

    sudo python bench/storm.py --mode socket [--crashes 1000 --seconds 60]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from collector.commands.install_handler import entry_script  # noqa: E402
from collector.service.pipe import KERNEL_ARGS  # noqa: E402
from tests.e2e.corepattern import FIXTURE_EXE, owned_core_pattern  # noqa: E402

sys.path.insert(0, str(HERE))
from serving import start_serve  # noqa: E402

# Four crash sites; `site` 0 is the storm, the others now and then.
PROGRAM = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
__attribute__((noinline)) void null_write(void) { *(volatile int *)16 = 1; }
__attribute__((noinline)) void do_abort(void) { abort(); }
__attribute__((noinline)) void bad_jump(void) { ((void (*)(void))8)(); }
__attribute__((noinline)) void trap(void) { __builtin_trap(); }
int main(int argc, char **argv)
{
    struct rlimit r = {RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_CORE, &r);
    switch (argc > 1 ? atoi(argv[1]) : 0) {
    case 1: do_abort(); break;
    case 2: bad_jump(); break;
    case 3: trap(); break;
    default: null_write();
    }
    return 0;
}
"""
HANDLER = """#!/bin/sh
for a; do case $a in P=*) pid=${{a#P=}} ;; esac; done
case $(readlink /proc/$pid/exe) in */{exe}) ;; *) exec cat >/dev/null ;; esac
export COLLECTOR_CONFIG={config} COLLECTOR_CONTROL={control}
{d}/cpu {d}/t.$pid {python} -I -S {d}/pipe-handler.py "$@"
if ls {reports}/*-$pid-* >/dev/null 2>&1; then k=delivered; else k=suppressed; fi
echo "$k $pid $(cat {d}/t.$pid)" >> {log}
"""
# cpu FILE PROGRAM ARG...: run PROGRAM, write the CPU time (user + system, in
# microseconds) it and its children took to FILE
CPU = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
int main(int argc, char **argv)
{
    struct rusage ru;
    int status;
    pid_t pid = fork();
    if (argc < 3 || pid < 0)
        return 127;
    if (pid == 0) {
        execv(argv[2], argv + 2);
        _exit(127);
    }
    if (wait4(pid, &status, 0, &ru) < 0)
        return 127;
    FILE *f = fopen(argv[1], "w");
    if (f) {
        fprintf(f, "%ld\n", (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000L
                + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        fclose(f);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"""


def build(d: Path) -> Path:
    src, exe = d / "storm.c", d / f"{FIXTURE_EXE}-storm"  # a name the tests' handlers take
    src.write_text(PROGRAM)
    subprocess.run(["cc", "-O1", "-g", "-o", exe, src], check=True)
    (d / "cpu.c").write_text(CPU)
    subprocess.run(["cc", "-O1", "-o", d / "cpu", d / "cpu.c"], check=True)
    return exe


def site(i: int) -> int:
    """Nine crashes in ten at site 0, the tenth at one of the other three."""
    return 0 if i % 10 else 1 + (i // 10) % 3


def crashes(exe: Path, n: int, seconds: float) -> tuple[list[int], dict[int, bool], list[float]]:
    """Start n crashing processes evenly over `seconds`; their pids, pid ->
    whether the kernel says it dumped core (reaped in a thread), and the
    CPU ms each took (the kernel writes its core in its name)."""
    pids: list[int] = []
    dumped: dict[int, bool] = {}
    spent: list[float] = []
    ready = threading.Semaphore(0)

    def reap():
        for k in range(n):
            ready.acquire()
            _, status, usage = os.wait4(pids[k], 0)
            dumped[pids[k]] = os.WCOREDUMP(status)
            spent.append((usage.ru_utime + usage.ru_stime) * 1000)

    reaper = threading.Thread(target=reap)
    reaper.start()
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i * seconds / n - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pids.append(os.posix_spawn(str(exe), [str(exe), str(site(i))], {
            "PATH": "/usr/bin:/bin"}, file_actions=[
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2)]))
        ready.release()
    reaper.join()
    return pids, dumped, spent


def cpu_of(pid: int) -> float:
    """ms of CPU of a process and its reaped children so far (/proc, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")


def suppressed_count(state: Path) -> int:
    try:
        db = sqlite3.connect(state / "reports.db")
        return db.execute("SELECT COALESCE(SUM(count), 0) FROM suppressed").fetchone()[0]
    except sqlite3.Error:
        return 0


def settle(count, want: int, timeout: float = 120) -> None:
    """Wait until `count()` reaches `want` or stops moving for 10 s."""
    deadline, last, still = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now >= want:
            return
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still > 10:
            return
        time.sleep(0.2)


def handler(d: Path, exe: Path, log: Path) -> str:
    """The pipe handler script's core_pattern (it hands its core to the
    service when one listens at d/c). It runs the entry script that
    `install-handler` writes, run as it has the kernel run it (`python -I
    -S`), with this checkout first on the path the script adds."""
    (d / "pipe-handler.py").write_text(entry_script(
        ["core", "--from-kernel", "--report-dir", str(d / "r")], str(d / "pipe-settings"),
        [str(REPO), sysconfig.get_paths()["purelib"]]))
    script = d / "h"
    script.write_text(HANDLER.format(exe=exe.name, config=d / "collector.toml",
                                     python=sys.executable, reports=d / "r", log=log, d=d,
                                     control=d / "c"))
    script.chmod(0o755)
    log.touch()
    return f"|{script} {KERNEL_ARGS}"


def run_service(args, d: Path, exe: Path) -> dict:
    """socket, request, and pipe-service: the pipe handler hands each core
    to the service (its CPU is added to the service's)."""
    sock, log, handlers = d / "s", d / "serve.log", d / "handler.log"
    env = dict(os.environ, COLLECTOR_CONFIG=str(d / "collector.toml"))
    piped = args.mode == "pipe-service"
    where = [] if piped else ["--socket", str(sock)]
    proc = start_serve([*where, "--control", str(d / "c"), "--report-dir", str(d / "r"),
                        "--jobs", str(args.jobs)], env, log)
    try:
        base = cpu_of(proc.pid)
        pattern = handler(d, exe, handlers) if piped else \
            ("@@" if args.mode == "request" else "@") + str(sock)
        with owned_core_pattern(pattern, pipe_limit=16 if piped else None):
            t0 = time.monotonic()
            pids, dumped, spent = crashes(exe, args.crashes, args.seconds)
            mine = set(map(str, pids))
            handled = lambda: sum(1 for m in re.finditer(  # noqa: E731
                r"pid (\d+): (report sent|suppressed)", log.read_text()) if m[1] in mine)
            settle(handled, len(pids))
            wall = time.monotonic() - t0
    finally:
        proc.terminate()
        _, _, usage = os.wait4(proc.pid, 0)
    text = log.read_text()
    own = {}  # pid -> the pipe handler's CPU, ms
    if piped:
        for line in handlers.read_text().splitlines():
            _, pid, us = line.split()
            own[pid] = int(us) / 1000
    per = {"delivered": [], "suppressed": []}
    for m in re.finditer(r"pid (\d+): (report sent|suppressed).*cpu_ms=([\d.]+)", text):
        if m[1] in mine:
            per["delivered" if m[2] == "report sent" else "suppressed"].append(
                float(m[3]) + own.get(m[1], 0.0))
    total = (usage.ru_utime + usage.ru_stime) * 1000 - base + sum(own.values())
    return {"pids": pids, "dumped": dumped, "per": per, "total": total, "wall": wall,
            "handlers": [own[p] for p in map(str, pids) if p in own], "spent": spent}


def run_pipe(args, d: Path, exe: Path) -> dict:
    log = d / "handler.log"
    with owned_core_pattern(handler(d, exe, log), pipe_limit=16):
        t0 = time.monotonic()
        pids, dumped, spent = crashes(exe, args.crashes, args.seconds)
        settle(lambda: len(log.read_text().splitlines()), len(pids), timeout=30)
        wall = time.monotonic() - t0
    per = {"delivered": [], "suppressed": []}
    mine = set(map(str, pids))
    for line in log.read_text().splitlines():
        kind, pid, us = line.split()
        if pid in mine:
            per[kind].append(int(us) / 1000)
    return {"pids": pids, "dumped": dumped, "per": per,
            "total": sum(per["delivered"]) + sum(per["suppressed"]), "wall": wall, "spent": spent}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["socket", "request", "pipe", "pipe-service"],
                   default="socket")
    p.add_argument("--crashes", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--jobs", type=int, default=2, help="serve --jobs")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (core_pattern)")
    d = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    d.chmod(0o755)
    try:
        (d / "r").mkdir(mode=0o700)
        (d / "collector.toml").write_text(f'[collector]\nstate_dir = "{d}/state"\n'
                                          f'[spool]\ndir = "{d}/spool"\n')
        exe = build(d)
        got = (run_pipe if args.mode == "pipe" else run_service)(args, d, exe)
        made = len(got["pids"])
        delivered = sum(1 for f in (d / "r").glob("*.json")
                        if re.search(r"-(\d+)-[0-9a-f]{8}\.json$", f.name)[1] in
                        set(map(str, got["pids"])))
        suppressed = suppressed_count(d / "state")
        per = got["per"]
        avg = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        print(f"mode {args.mode}: {made} crashes in {args.seconds:g} s "
              f"({len(set(site(i) for i in range(made)))} sites)")
        print(f"  reports delivered     {delivered}")
        print(f"  counted as suppressed {suppressed}")
        print(f"  skipped by the kernel {made - delivered - suppressed} "
              f"({100 * (made - delivered - suppressed) / made:.1f}%)")
        print(f"  dumped core (kernel)  {sum(got['dumped'].values())}")
        print(f"  CPU per crash         {got['total'] / made:.1f} ms on average")
        print(f"  CPU per delivered     {avg(per['delivered']):.1f} ms "
              f"({len(per['delivered'])} handlers)")
        print(f"  CPU per suppressed    {avg(per['suppressed']):.1f} ms "
              f"({len(per['suppressed'])} handlers)")
        if got.get("handlers"):
            print(f"  of which pipe handler {avg(got['handlers']):.1f} ms on average")
        print(f"  crashing process      {avg(got['spent']):.1f} ms on average (not counted "
              "above: its start, and the kernel writing its core)")
        print(f"  wall                  {got['wall']:.1f} s")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
