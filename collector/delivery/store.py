"""The local store: every report kept in an SQLite database in the state
directory (reports.db), for `collector list` and `collector show`, as
systemd-coredump keeps its cores for coredumpctl.

WAL mode, so that readers never wait for the crash handlers that write; each
write is one short IMMEDIATE transaction with a busy timeout, so a storm of
parallel handlers queues rather than fails. Retention runs after each insert
(count, bytes, age, and a floor of free disk, like coredump.conf's MaxUse and
KeepFree). Suppressed crashes are counted per fingerprint.
"""
from __future__ import annotations

import os
import time

from ..files import own_dir

SCHEMA_VERSION = 1
BUSY_MS = 30_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    report_id TEXT UNIQUE NOT NULL,
    time REAL NOT NULL,
    source TEXT, snapshot INTEGER NOT NULL,
    pid INTEGER, uid INTEGER, gid INTEGER,
    signal INTEGER, signal_name TEXT,
    exe TEXT, name TEXT, unit TEXT,
    fingerprint TEXT, function TEXT,
    bytes INTEGER NOT NULL,
    report TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_time ON reports (time);
CREATE INDEX IF NOT EXISTS reports_exe ON reports (exe);
CREATE INDEX IF NOT EXISTS reports_fingerprint ON reports (fingerprint);
CREATE INDEX IF NOT EXISTS reports_pid ON reports (pid);
CREATE INDEX IF NOT EXISTS reports_signal ON reports (signal);
CREATE INDEX IF NOT EXISTS reports_unit ON reports (unit);
CREATE TABLE IF NOT EXISTS suppressed (
    fingerprint TEXT PRIMARY KEY, count INTEGER NOT NULL,
    first REAL NOT NULL, last REAL NOT NULL, exe TEXT);
"""
COLUMNS = ("report_id", "time", "source", "snapshot", "pid", "uid", "gid", "signal",
           "signal_name", "exe", "name", "unit", "fingerprint", "function", "bytes")


class StoreError(Exception):
    pass


def report_time(report: dict) -> float:
    import datetime
    try:
        return datetime.datetime.fromisoformat(report["time"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, AttributeError, TypeError):
        return time.time()


def top_function(report: dict) -> str | None:
    from .fingerprint import crashed_thread, meaningful
    top = next(meaningful(crashed_thread(report.get("threads") or [])), None)
    return top.get("function") if top else None


def row(report: dict, data: bytes) -> dict:
    """The columns of a report kept as `data` (its JSON, compressed)."""
    p = report.get("process") or {}
    sig = report.get("signal") or {}
    return {"report_id": str(report.get("report_id")), "time": report_time(report),
            "source": report.get("source"), "snapshot": int(report.get("source") == "attach"),
            "pid": p.get("pid"), "uid": p.get("uid"), "gid": p.get("gid"),
            "signal": sig.get("number"), "signal_name": sig.get("name"),
            "exe": p.get("exe"), "name": p.get("name"), "unit": p.get("unit"),
            "fingerprint": report.get("fingerprint"), "function": top_function(report),
            "bytes": len(data), "report": data}


def _condition(field: str, value: str) -> tuple[str, list]:
    if field in ("pid", "uid"):
        try:
            return f"{field} = ?", [int(value)]
        except ValueError:
            return "0", []
    if field == "signal":
        if value.isdigit():
            return "signal = ?", [int(value)]
        name = value.upper()
        return "signal_name = ?", [name if name.startswith("SIG") else "SIG" + name]
    if field == "name":  # the command name, or the executable's base name
        return "(name = ? OR exe LIKE ? ESCAPE '\\')", [value, "%/" + _like(value)]
    if field == "fingerprint":  # a prefix is enough, as with git hashes
        return "fingerprint LIKE ? ESCAPE '\\'", [_like(value) + "%"]
    return f"{field} = ?", [value]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    def __init__(self, state_dir: str | None, settings: dict):
        """`state_dir` None: a store in memory (reports read from elsewhere,
        e.g. the journal, searched as the database is)."""
        self.path = os.path.join(state_dir, "reports.db") if state_dir else ":memory:"
        self.dir = state_dir
        self.s = settings
        self._db = None

    @property
    def enabled(self) -> bool:
        return self.s["enabled"]

    def db(self, create: bool = True):
        """The connection (StoreError if the database is missing or unusable)."""
        import sqlite3  # here: start-up before a target is stopped must stay lean
        if self._db is None:
            memory = self.dir is None
            if not create and not memory and not os.path.exists(self.path):
                raise StoreError(f"no report store at {self.path}")
            create = create or memory
            old = os.umask(0o077)  # the database and its -wal, -shm files: 0600
            try:
                if create and not memory:
                    own_dir(self.dir)
                db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
                db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                if create:
                    self._migrate(db)
            except (sqlite3.Error, OSError) as e:
                raise StoreError(f"{self.path}: {e}") from None
            finally:
                os.umask(old)
            self._db = db
        return self._db

    def _migrate(self, db) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            got = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if got is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(got[0]) > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema {got[0]} is newer than this collector's "
                                 f"({SCHEMA_VERSION})")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add(self, report: dict, trim: bool = True) -> str:
        """Keep the report (a report stored before, symbolized again, replaces
        itself); returns it as JSON, as it was kept. Kept zlib-compressed
        (a BLOB; a report kept before as TEXT still reads): a tenth to a
        twentieth of the JSON, so SQLite writes that much less, twice (the
        WAL, then its checkpoint), and `bytes` counts what the disk holds."""
        import json  # here: counting a suppressed crash needs none (json brings re)
        import zlib
        data = json.dumps(report, separators=(",", ":"))
        values = row(report, zlib.compress(data.encode(), 1))
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        update = ", ".join(f"{k} = excluded.{k}" for k in values if k != "report_id")
        self._write(lambda db: db.execute(
            f"INSERT INTO reports ({names}) VALUES ({marks}) "
            f"ON CONFLICT(report_id) DO UPDATE SET {update}", values))
        if trim:
            self._write(self.trim)
        return data

    def count_suppressed(self, report: dict) -> None:
        now = report_time(report)
        exe = (report.get("process") or {}).get("exe")
        self._write(lambda db: db.execute(
            "INSERT INTO suppressed VALUES (?, 1, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE "
            "SET count = count + 1, last = excluded.last",
            (report.get("fingerprint") or "", now, now, exe)))

    def _write(self, change) -> None:
        import sqlite3
        db = self.db()
        old = os.umask(0o077)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                change(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None
        finally:
            os.umask(old)

    def trim(self, db) -> None:
        """Retention: the oldest reports go first, the newest always stays."""
        s = self.s
        db.execute("DELETE FROM reports WHERE id NOT IN "
                   "(SELECT id FROM reports ORDER BY time DESC, id DESC LIMIT ?)",
                   (max(1, s["max_reports"]),))
        if s["max_age"]:
            db.execute("DELETE FROM reports WHERE time < ? AND id != (SELECT max(id) FROM reports)",
                       (time.time() - s["max_age"],))
        total = db.execute("SELECT coalesce(sum(bytes), 0) FROM reports").fetchone()[0]
        need = max(0, self._short_of_free())
        while total > s["max_bytes"] or need > 0:
            oldest = db.execute("SELECT id, bytes FROM reports ORDER BY time, id "
                                "LIMIT 1 OFFSET 0").fetchone()
            if oldest is None or db.execute("SELECT count(*) FROM reports").fetchone()[0] <= 1:
                break
            db.execute("DELETE FROM reports WHERE id = ?", (oldest[0],))
            total -= oldest[1]
            need -= oldest[1]

    def _short_of_free(self) -> int:
        """Bytes the disk lacks to keep `keep_free` free."""
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return 0
        return self.s["keep_free"] - st.f_bavail * st.f_frsize

    def find(self, matches: list[tuple[str, str]], since: float | None = None,
             until: float | None = None, snapshots: bool = False, newest_first: bool = False,
             limit: int | None = None) -> list[dict]:
        """Rows of the reports that match: matches of one field any, of
        different fields all, as coredumpctl takes them."""
        by_field: dict[str, list[str]] = {}
        for field, value in matches:
            by_field.setdefault(field, []).append(value)
        where, params = [], []
        for field, values in by_field.items():
            ors = []
            for value in values:
                clause, args = _condition(field, value)
                ors.append(clause)
                params += args
            where.append("(" + " OR ".join(ors) + ")")
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time <= ?")
            params.append(until)
        if not snapshots:
            where.append("snapshot = 0")
        if limit is not None and not newest_first:  # the newest N, shown oldest first
            return self.query(where, params, "DESC", limit)[::-1]
        return self.query(where, params, "DESC" if newest_first else "ASC", limit)

    def query(self, where: list[str], params: list, order: str = "DESC",
              limit: int | None = None) -> list[dict]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM reports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY time {order}, id {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        import sqlite3
        try:
            return [dict(zip(COLUMNS, r)) for r in self.db(create=False).execute(sql, params)]
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None

    def report(self, report_id: str) -> dict:
        import sqlite3
        try:
            got = self.db(create=False).execute("SELECT report FROM reports WHERE report_id = ?",
                                                (report_id,)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None
        if got is None:
            raise StoreError(f"report {report_id} is no longer in {self.path}")
        import json
        kept = got[0]
        if isinstance(kept, bytes):
            import zlib
            try:
                kept = zlib.decompress(kept)
            except zlib.error as e:
                raise StoreError(f"report {report_id} in {self.path} is damaged: {e}") from None
        return json.loads(kept)

    def suppressed(self) -> dict[str, dict]:
        import sqlite3
        try:
            rows = self.db(create=False).execute(
                "SELECT fingerprint, count, first, last, exe FROM suppressed").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None
        return {fp: {"count": c, "first": f, "last": la, "exe": e} for fp, c, f, la, e in rows}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
