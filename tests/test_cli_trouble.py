"""Ordinary trouble through the real ``newsletter`` program: one line on stderr, the documented exit code
(README, "Exit codes"), never a traceback; and the command line's smaller promises (issue 10, 15-17)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from newsletter.devsmtp import free_port, messages_by_recipient
from tests.support.feedserver import Reply, file_reply
from tests.test_cli import config_with_sources, run

GARBAGE = b"this is not an SQLite database, whatever its name says\n" * 200


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def count(database: Path, table: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Root ignores file permissions, so chmod cannot make a file read-only for these tests. The immutable
    attribute (chattr +i) refuses writes even to root: SQLite then opens the database read-only, exactly
    as it does a chmod 444 file for an ordinary user."""
    require_root("chattr +i")
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A real small file system, to fill up."""
    require_root("mount -t tmpfs")
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def init(tmp_path: Path) -> Path:
    assert run("init", cwd=tmp_path).returncode == 0
    return tmp_path / "data" / "newsletter.db"


# --- 15: output paths ----------------------------------------------------------------------------------------


def test_outputs_into_a_missing_directory_are_refused_before_any_work(tmp_path):
    database = init(tmp_path)
    built = run("digest", "build", "--json", "missing/dir/edition.json", cwd=tmp_path)
    assert_one_error_line(
        built, 2, "--json missing/dir/edition.json", "the directory missing/dir does not exist"
    )
    assert count(database, "editions") == 0  # the failed build stored nothing

    assert run("digest", "build", cwd=tmp_path).returncode == 0
    preview = run("digest", "preview", "1", "--out", "missing/preview.html", cwd=tmp_path)
    assert_one_error_line(preview, 2, "--out missing/preview.html", "does not exist")
    exported = run("subscribers", "export", "missing/subscribers.csv", cwd=tmp_path)
    assert_one_error_line(exported, 2, "missing/subscribers.csv", "does not exist")


def test_outputs_into_a_directory_that_cannot_be_written_are_refused(tmp_path):
    database = init(tmp_path)
    closed = tmp_path / "closed"
    closed.mkdir()
    with immutable(closed):  # no file can be created in it, not even by root
        built = run("digest", "build", "--json", "closed/edition.json", cwd=tmp_path)
        exported = run("subscribers", "export", "closed/subscribers.csv", cwd=tmp_path)
    assert_one_error_line(built, 2, "the directory closed is not writable")
    assert_one_error_line(exported, 2, "the directory closed is not writable")
    assert count(database, "editions") == 0


# --- 15: the database --------------------------------------------------------------------------------------


def test_a_read_only_database_file_is_one_line_for_every_command(tmp_path):
    database = init(tmp_path)
    assert run("subscribers", "add", "ada@example.org", cwd=tmp_path).returncode == 0
    port = str(free_port())
    with immutable(database):
        results = {
            "subscribers add": run("subscribers", "add", "bob@example.org", cwd=tmp_path),
            "digest build": run("digest", "build", cwd=tmp_path),
            "jobs run cleanup": run("jobs", "run", "cleanup", cwd=tmp_path),
            "serve": run("serve", "--port", port, cwd=tmp_path, timeout=60),
            "run": run("run", "--port", port, cwd=tmp_path, timeout=60),
        }
        status = run("status", cwd=tmp_path)  # reading still works
    for command, result in results.items():
        line = assert_one_error_line(result, 1, "cannot be written")
        assert str(database) in line, command
    assert status.returncode == 0 and "1 active" in status.stdout
    assert count(database, "subscribers") == 1


def test_a_corrupted_database_is_one_line_for_every_command(tmp_path):
    database = init(tmp_path)
    database.write_bytes(GARBAGE)
    port = str(free_port())
    for args in (
        ("digest", "send", "1"),
        ("resume", "1"),
        ("jobs", "run", "fetch"),
        ("serve", "--port", port),
        ("run", "--port", port),
        ("run", "--no-web"),
        ("status",),
        ("subscribers", "add", "ada@example.org"),
    ):
        result = run(*args, cwd=tmp_path, timeout=60)
        line = assert_one_error_line(
            result, 1, f"the database {database} is damaged or is not a newsletter database"
        )
        assert "restore a backup" in line, args
    assert database.read_bytes() == GARBAGE  # nothing tried to "repair" it


def test_a_database_path_that_cannot_be_opened_is_the_same_usage_error_for_every_command(tmp_path):
    """Commands open the database through the command line or through the library (jobs, the web app):
    a directory that cannot be made is one line and exit status 2 either way. Sending and previews never
    create a database: for them it is not there."""
    database = "/proc/no-such-dir/news.db"  # nobody, not even root, can make a directory there
    (tmp_path / "note.md").write_text("A short note.\n")
    lines = {
        args: assert_one_error_line(
            run("--db", database, *args, cwd=tmp_path, timeout=60), 2, f"cannot open the database {database}"
        )
        for args in (
            ("fetch",),
            ("subscribers", "add", "ada@example.org"),
            ("jobs", "run", "cleanup"),
            ("serve", "--port", str(free_port())),
        )
    }
    assert len(set(lines.values())) == 1, lines  # one cause, one line
    missing = {
        args: assert_one_error_line(
            run("--db", database, *args, cwd=tmp_path, timeout=60), 2, f"there is no database at {database}"
        )
        for args in (
            ("digest", "send", "1"),
            ("digest", "preview", "1"),
            ("resume", "1"),
            ("send", "--subject", "Note", "--body", "note.md"),
        )
    }
    assert len(set(missing.values())) == 1, missing
    assert list(tmp_path.iterdir()) == [tmp_path / "note.md"]


@pytest.mark.slow
def test_a_database_locked_longer_than_the_busy_timeout_is_one_line(tmp_path):
    """Another connection holds the write lock for longer than the 10 s busy timeout: the command waits
    that long, then says so."""
    database = init(tmp_path)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run("subscribers", "add", "ada@example.org", cwd=tmp_path)
    finally:
        holder.close()
    assert_one_error_line(result, 1, f"the database {database} is locked", "run the command again")
    assert count(database, "subscribers") == 0
    assert run("subscribers", "add", "ada@example.org", cwd=tmp_path).returncode == 0  # and then it works


def test_an_import_that_fills_the_disk_says_what_was_kept_and_a_rerun_finishes(tmp_path):
    rows = 60_000
    csv_file = tmp_path / "subscribers.csv"
    csv_file.write_text("email,name\n" + "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(rows)))
    with tmpfs(tmp_path / "disk", "2m") as disk:
        database = disk / "news.db"
        assert run("--db", str(database), "init", cwd=tmp_path).returncode == 0
        stopped = run("--db", str(database), "subscribers", "import", str(csv_file), cwd=tmp_path)
        line = assert_one_error_line(
            stopped, 1, "the import stopped: the disk holding the database", "is full"
        )
        committed = int(re.search(r"(\d+) new subscribers were committed and are kept", line).group(1))
        assert f"the rest of {csv_file} was not imported" in line and "free some space" in line
        assert 0 < committed < rows and count(database, "subscribers") == committed

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        again = run("--db", str(database), "subscribers", "import", str(csv_file), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert f"imported {rows - committed} new subscribers; {committed} already known" in again.stdout
        assert count(database, "subscribers") == rows


# --- 15: ports, addresses, interruptions ----------------------------------------------------------------------


def test_dev_smtp_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("dev-smtp", "--port", str(port), cwd=tmp_path, timeout=60)
    assert_one_error_line(result, 1, f"127.0.0.1:{port} is already in use", "choose another port")


def test_a_test_copy_to_something_that_is_not_an_address_is_a_usage_error(tmp_path):
    init(tmp_path)
    assert run("digest", "build", cwd=tmp_path).returncode == 0
    result = run("digest", "send", "1", "--to", "not-an-email", cwd=tmp_path)
    assert_one_error_line(result, 2, "'not-an-email' is not a valid email address")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path, feed_server):
    slow = feed_server.route("/slow", Reply(body=b"<rss/>", delay=3))
    config = config_with_sources(tmp_path, [("slow", "feed", slow)])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    fetch = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(config), "fetch"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not feed_server.requests_to("/slow") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed_server.requests_to("/slow"), "fetch never asked for the feed"
        fetch.send_signal(signal.SIGINT)
        _, stderr = fetch.communicate(timeout=60)
    finally:
        fetch.kill()
    assert "Traceback" not in stderr, stderr
    assert fetch.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr


# --- 16: read-only commands ----------------------------------------------------------------------------------


def test_read_only_commands_create_nothing_and_say_to_run_init(tmp_path):
    for args in (
        ("status",),
        ("jobs", "list"),
        ("subscribers", "list"),
        ("subscribers", "export"),
        ("backup", "copies/newsletter.db"),  # nor the copy, nor its directory
    ):
        result = run(*args, cwd=tmp_path)
        assert_one_error_line(result, 2, "there is no database at", "run `newsletter init` first")
    doctor = run("doctor", cwd=tmp_path)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert (
        "FAILED database: there is no database at" in doctor.stdout
        and "run `newsletter init`" in doctor.stdout
    )
    assert list(tmp_path.iterdir()) == []  # no database, no data directory, no maildir


def test_sending_and_previewing_without_a_database_say_to_run_init_and_create_nothing(tmp_path):
    (tmp_path / "body.md").write_text("Hello.\n")
    before = sorted(tmp_path.iterdir())
    for args in (
        ("digest", "preview", "1"),
        ("digest", "send", "1"),
        ("digest", "send", "1", "--to", "reader@example.org"),
        ("resume", "1"),
        ("send", "--subject", "News", "--body", "body.md"),
    ):
        result = run(*args, cwd=tmp_path)
        assert_one_error_line(result, 2, "there is no database at", "run `newsletter init` first")
    assert sorted(tmp_path.iterdir()) == before


def test_a_backup_of_a_mistyped_database_path_is_refused_and_creates_nothing(tmp_path):
    """The directory exists, the database does not: SQLite would create an empty file there and the
    backup would 'succeed' with an empty copy."""
    result = run("--db", "newsleter.db", "backup", "copy.db", cwd=tmp_path)
    assert_one_error_line(result, 2, "there is no database at newsleter.db")
    assert list(tmp_path.iterdir()) == []


# --- 17 --------------------------------------------------------------------------------------------------------


def test_dev_smtp_stores_messages_in_an_existing_empty_directory(tmp_path):
    maildir = tmp_path / "mail"
    maildir.mkdir()
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "dev-smtp", "--port", str(port), "--maildir", str(maildir)],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "storing messages in" in server.stdout.readline()
        import smtplib

        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            refused = client.sendmail(
                "editor@example.org", ["ada@example.org"], b"Subject: hello\r\n\r\nHi\r\n"
            )
        assert refused == {}
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0 and "Traceback" not in stderr, stderr
    [message] = messages_by_recipient(maildir)["ada@example.org"]
    assert message["Subject"] == "hello"


def test_the_embedded_smtp_server_adds_no_protocol_chatter_to_the_log(tmp_path):
    """`serve` and `run` log at INFO; `-v` sets the same level for a one-off sent through the embedded
    server, which used to log each SMTP command and reply (about 18 lines per message)."""
    init(tmp_path)
    for address in ("ada@example.org", "bob@example.org", "cy@example.org"):
        assert run("subscribers", "add", address, cwd=tmp_path).returncode == 0
    (tmp_path / "note.md").write_text("A short note.\n")
    result = run("-v", "send", "--subject", "Note", "--body", "note.md", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "3 sent" in result.stdout
    chatter = [line for line in result.stderr.splitlines() if "mail.log" in line]
    assert chatter == []


def test_categories_outside_the_arxiv_taxonomy_are_refused(tmp_path):
    database = init(tmp_path)
    refused = run("subscribers", "add", "ada@example.org", "--categories", "cs.LG,cs.XX", cwd=tmp_path)
    assert_one_error_line(refused, 2, "'cs.XX' is not an arXiv category")
    typo = run("subscribers", "add", "ada@example.org", "--categories", "cs.LGG", cwd=tmp_path)
    assert_one_error_line(typo, 2, "did you mean cs.LG?")
    assert count(database, "subscribers") == 0
    added = run(
        "subscribers", "add", "ada@example.org", "--categories", "cs.lg, q-bio.NC, hep-th", cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr
    with closing(sqlite3.connect(database)) as conn:
        stored = conn.execute("SELECT categories FROM subscribers").fetchone()[0]
    assert stored == '["cs.LG","hep-th","q-bio.NC"]'  # arXiv's spelling


def test_a_source_named_twice_is_fetched_once(tmp_path, feed_server, fixtures):
    url = feed_server.route("/lg", file_reply(fixtures / "arxiv_rss_small.xml"))
    config = config_with_sources(tmp_path, [("arxiv", "arxiv_rss", url)])
    result = run("--config", str(config), "fetch", "--source", "arxiv", "--source", "arxiv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(feed_server.requests_to("/lg")) == 1
    assert len([line for line in result.stdout.splitlines() if line.startswith("arxiv ")]) == 1


def test_jobs_run_cleanup_says_what_it_deleted_in_words(tmp_path):
    init(tmp_path)
    result = run("jobs", "run", "cleanup", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "deleted 0 papers, 0 delivery records, 0 fetch records, 0 job run records, 0 bounces and complaints and 0 unconfirmed sign-ups"
        in result.stdout
    ), result.stdout
    assert "{" not in result.stdout


def test_subscribers_export_help_shows_the_file_as_optional(tmp_path):
    result = run("subscribers", "export", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage: newsletter subscribers export [OPTIONS] [FILE.csv]" in result.stdout


def test_the_fetch_table_counts_replacements_of_unseen_papers_as_revisions(tmp_path, feed_server, fixtures):
    # The fixture: one new, one cross-list, and a replace and a replace-cross of papers never seen before.
    url = feed_server.route("/lg", file_reply(fixtures / "arxiv_rss_small.xml"))
    config = config_with_sources(tmp_path, [("arxiv", "arxiv_rss", url)])
    result = run("--config", str(config), "fetch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "duplicates" in line)
    assert [cell.strip() for cell in header.split("┃")][2:7] == [
        "fetched", "new", "updated", "revisions", "duplicates",
    ]  # fmt: skip
    row = next(line for line in result.stdout.splitlines() if line.startswith("arxiv"))
    assert [cell.strip() for cell in row.split("│")][2:7] == ["4", "2", "0", "2", "0"]
    with closing(sqlite3.connect(tmp_path / "news.db")) as conn:
        recorded = conn.execute(
            "SELECT fetched, new, updated, revisions, duplicates FROM fetch_runs"
        ).fetchall()
    assert recorded == [(4, 2, 0, 2, 0)]
