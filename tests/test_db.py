from __future__ import annotations

import subprocess
import sys

from newsletter.db import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    migrate_database,
    open_database,
    schema_version,
    write_transaction,
)


def test_database_is_shared_safely(tmp_path):
    db = open_database(tmp_path / "sub" / "news.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert schema_version(db) == len(MIGRATIONS)
    assert {"papers", "paper_keys", "sources", "fetch_runs"} <= set(db.table_names())
    assert migrate_database(db) == len(MIGRATIONS)  # a second run changes nothing
    db.close()


def test_write_transaction_is_all_or_nothing(db):
    try:
        with write_transaction(db):
            db.execute("INSERT INTO sources (name, kind, url) VALUES ('a', 'feed', 'https://e.org')")
            raise RuntimeError("crash in the middle")
    except RuntimeError:
        pass
    assert db.execute("SELECT count(*) FROM sources").fetchone()[0] == 0


OPEN = "import sys; from newsletter.db import open_database; open_database(sys.argv[1]).close()"


def test_processes_creating_the_database_together_all_succeed(tmp_path):
    for attempt in range(5):
        path = tmp_path / f"race{attempt}.db"
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, str(path)], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        results = [(proc.wait(timeout=60), proc.stderr.read()) for proc in procs]
        assert all(code == 0 for code, _ in results), results
        check = open_database(path)
        assert schema_version(check) == len(MIGRATIONS)
        check.close()
