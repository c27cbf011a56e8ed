"""The command line, run as the installed ``newsletter`` program in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.feedserver import Reply, file_reply

SAMPLE_ARXIV_PAPERS = 40


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment.update(env or {})
    environment["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_with_sources(tmp_path: Path, sources: list[tuple[str, str, str]], extra: str = "") -> Path:
    lines = [
        '[newsletter]\ndatabase = "news.db"\n[fetch]\ntimeout = 2\nattempts = 2\nbackoff = 0.05\n',
        extra,
    ]
    for name, kind, url in sources:
        lines.append(f'[[sources]]\nname = "{name}"\nkind = "{kind}"\nurl = "{url}"\n')
    path = tmp_path / "newsletter.toml"
    path.write_text("\n".join(lines))
    return path


def test_init_writes_commented_config_and_a_wal_database(tmp_path):
    result = run("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "newsletter.toml"
    assert config.exists() and "# Each [[sources]] entry is one feed" in config.read_text()
    database = tmp_path / "data" / "newsletter.db"
    assert database.exists()
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"papers", "paper_keys", "sources", "fetch_runs"} <= tables

    config.write_text(config.read_text() + "\n# my edit\n")
    again = run("init", cwd=tmp_path)
    assert again.returncode == 0 and "already exists" in again.stdout
    assert "# my edit" in config.read_text()
    forced = run("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "# my edit" not in config.read_text()


def test_fetch_prints_counts_per_source(tmp_path, feed_server, fixtures):
    url_lg = feed_server.route("/lg", file_reply(fixtures / "arxiv_rss_small.xml"))
    url_hf = feed_server.route("/hf", file_reply(fixtures / "hf_daily_small.json", "application/json"))
    config = config_with_sources(tmp_path, [("arxiv", "arxiv_rss", url_lg), ("hf", "hf_daily", url_hf)])
    result = run("--config", str(config), "fetch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    header = next(line for line in result.stdout.splitlines() if "duplicates" in line)
    assert header.split()[:8] == ["source", "┃", "status", "┃", "fetched", "┃", "new", "┃"]
    arxiv_line = next(line for line in result.stdout.splitlines() if line.startswith("arxiv"))
    # columns: fetched, new, updated, revisions (replaces of papers never seen), duplicates, errors
    assert [cell.strip() for cell in arxiv_line.split("│")][:8] == ["arxiv", "ok", "4", "2", "0", "2", "0", "0"]  # fmt: skip
    hf_line = next(line for line in result.stdout.splitlines() if line.startswith("hf "))
    assert [cell.strip() for cell in hf_line.split("│")][:8] == ["hf", "ok", "2", "1", "1", "0", "0", "1"]
    assert "hf: entry 3 skipped: no arXiv id" in result.stdout

    second = run("--config", str(config), "fetch", "--source", "arxiv", cwd=tmp_path)
    assert second.returncode == 0
    line = next(line for line in second.stdout.splitlines() if line.startswith("arxiv"))
    assert "unchanged" in line
    assert not any(line.startswith("hf ") for line in second.stdout.splitlines())


def test_fetch_exits_non_zero_naming_the_failed_source_and_why(tmp_path, feed_server, fixtures):
    good = feed_server.route("/good", file_reply(fixtures / "arxiv_rss_small.xml"))
    broken = feed_server.route(
        "/broken",
        Reply(
            body=b"<html><head><title>Bad Gateway</title></head></html>", status=502, content_type="text/html"
        ),
    )
    config = config_with_sources(tmp_path, [("good", "arxiv_rss", good), ("broken", "feed", broken)])
    result = run("--config", str(config), "fetch", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "broken failed: HTTP 502 Bad Gateway: HTML page titled 'Bad Gateway' (gave up after 2 attempts)"
        in result.stdout
    )
    assert "1 of 2 sources failed: broken" in result.stderr
    with sqlite3.connect(tmp_path / "news.db") as conn:
        assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 4


def test_unknown_source_and_broken_config_are_usage_errors(tmp_path, feed_server, fixtures):
    config = config_with_sources(tmp_path, [("good", "arxiv_rss", feed_server.route("/g", Reply(body=b"x")))])
    unknown = run("--config", str(config), "fetch", "--source", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no source named 'nope' (configured: good)" in unknown.stderr
    unusable = run("--config", str(config), "--db", "/proc/no-such-dir/news.db", "fetch", cwd=tmp_path)
    assert (
        unusable.returncode == 2 and "cannot open the database /proc/no-such-dir/news.db" in unusable.stderr
    )
    config.write_text('[[sources]]\nname = "x"\nkind = "rss"\nurl = "https://e.org"\n')
    broken = run("--config", str(config), "fetch", cwd=tmp_path)
    assert broken.returncode == 2
    assert "configuration error" in broken.stderr and "unknown kind 'rss'" in broken.stderr


def test_demo_falls_back_to_the_bundled_sample_when_offline(tmp_path):
    port = closed_port()
    config = config_with_sources(
        tmp_path,
        [
            ("arxiv", "arxiv_rss", f"http://127.0.0.1:{port}/rss/cs.LG"),
            ("hf", "hf_daily", f"http://127.0.0.1:{port}/hf"),
        ],
    )
    result = run("--config", str(config), "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "arxiv failed: could not connect: connection refused" in result.stdout
    assert "no live source could be reached: using the sample feed bundled with the project" in result.stdout
    assert f"{SAMPLE_ARXIV_PAPERS} papers stored" in result.stdout
    with sqlite3.connect(tmp_path / "news.db") as conn:
        sources = dict(conn.execute("SELECT name, last_status FROM sources").fetchall())
        upvoted = conn.execute("SELECT count(*) FROM papers WHERE upvotes IS NOT NULL").fetchone()[0]
        new = conn.execute("SELECT count(*) FROM papers WHERE is_new = 1").fetchone()[0]
    assert sources == {"arxiv": "failed", "hf": "failed", "sample-arxiv": "ok", "sample-huggingface": "ok"}
    assert upvoted == 8  # the Hugging Face sample merged into the arXiv sample's papers
    assert new == SAMPLE_ARXIV_PAPERS - 2  # the sample's two replace announcements are not new


def test_demo_on_a_fresh_directory_creates_everything(tmp_path):
    result = run("demo", "--offline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "newsletter.toml").exists()
    assert "--offline: using the sample feed" in result.stdout
    assert f"{SAMPLE_ARXIV_PAPERS} papers stored in {tmp_path / 'data' / 'newsletter.db'}" in result.stdout
    assert re.search(r"edition 1 \(.*\): 38 papers in 6 topics", result.stdout)
    assert "Tree-Structured Speculative Decoding with a Shared Draft Head ▲112" in result.stdout
    again = run("demo", "--offline", cwd=tmp_path)
    assert again.returncode == 0 and "0 new in this run" in again.stdout
    assert re.search(r"edition 2 \(.*\): nothing new in this window", again.stdout)


def test_demo_uses_live_sources_when_they_answer(tmp_path, feed_server, fixtures):
    url = feed_server.route("/lg", file_reply(fixtures / "arxiv_rss_small.xml"))
    config = config_with_sources(tmp_path, [("arxiv", "arxiv_rss", url)])
    result = run("--config", str(config), "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sample feed" not in result.stdout
    assert "4 papers stored" in result.stdout and "2 new in this run" in result.stdout


@pytest.mark.slow
def test_two_fetches_write_the_same_database_at_once(tmp_path, feed_server, corpus_feeds):
    big = corpus_feeds / "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml"
    first = config_with_sources(tmp_path, [("one", "arxiv_rss", feed_server.route("/one", file_reply(big)))])
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = config_with_sources(
        second_dir,
        [
            (
                "two",
                "hf_daily",
                feed_server.route(
                    "/two", file_reply(corpus_feeds / "hf_api_daily_papers_2026-06-12__sotawhat.json")
                ),
            )
        ],
    )
    database = tmp_path / "shared.db"
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--config", str(config), "--db", str(database), "fetch"],
            cwd=tmp_path,
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for config in (first, second)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 1504 + 30


def test_text_with_square_brackets_is_printed_as_is(tmp_path, feed_server):
    item = """<item><title>[Re] Reproducing [bold]Sparse[/bold] Experts {n}</title><link>https://arxiv.org/abs/2501.0010{n}</link>
      <description>arXiv:2501.0010{n}v1 Announce Type: new
Abstract: We reproduce [red]sparse experts[/red] results, number {n}.</description>
      <guid>oai:arXiv.org:2501.0010{n}v1</guid><category>cs.LG</category>
      <arxiv:announce_type>new</arxiv:announce_type><dc:creator>A. Author</dc:creator></item>"""
    body = (
        '<rss version="2.0" xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<channel><title>t</title>" + item.format(n=1) + item.format(n=2) + "</channel></rss>"
    ).encode()
    config = config_with_sources(
        tmp_path, [("arxiv", "arxiv_rss", feed_server.route("/rss", Reply(body=body)))]
    )
    result = run("--config", str(config), "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[Re] Reproducing [bold]Sparse[/bold] Experts" in result.stdout


def test_subscribers_preview_send_and_one_off_from_the_command_line(tmp_path):
    import email as email_lib
    import email.policy

    from newsletter.devsmtp import messages_by_recipient

    assert run("demo", "--offline", cwd=tmp_path).returncode == 0  # 3 sample readers got edition 1
    maildir = tmp_path / "data" / "maildir"
    assert sorted(messages_by_recipient(maildir)) == [
        "ada.reader@example.org",
        "alan.reader@example.org",
        "grace.reader@example.org",
    ]

    added = run("subscribers", "add", "Zoe@Example.org", "--name", "Zoë", cwd=tmp_path)
    assert added.returncode == 0 and "added Zoe@example.org" in added.stdout
    rejected = run("subscribers", "add", "not-an-address", cwd=tmp_path)
    assert rejected.returncode == 2 and "not a valid email address" in rejected.stderr
    (tmp_path / "more.csv").write_text("email,name\nyan@example.org,Yan\nbroken,Nobody\n")
    imported = run("subscribers", "import", "more.csv", cwd=tmp_path)
    assert imported.returncode == 1  # a row was rejected: said, and the rest imported
    assert "imported 1 new subscribers" in imported.stdout and "line 3:" in imported.stdout
    listed = run("subscribers", "list", "--search", "example.org", cwd=tmp_path)
    assert "5 subscribers" in listed.stdout and "Zoë" in listed.stdout

    preview = run("digest", "preview", "1", "--out", "preview.html", "--as", "zoe@example.org", cwd=tmp_path)
    assert preview.returncode == 0 and "KB of HTML" in preview.stdout
    assert "Hello Zo&#235;," in (tmp_path / "preview.html").read_text()

    copy = run("digest", "send", "1", "--to", "editor@example.org", cwd=tmp_path)
    assert copy.returncode == 0 and "test copy of edition 1 sent to editor@example.org" in copy.stdout
    resumed = run("resume", "1", cwd=tmp_path)  # everyone who was a recipient has it: nothing to do
    assert resumed.returncode == 0 and "0 sent in this run" in resumed.stdout

    (tmp_path / "note.md").write_text("# Note\n\nThe digest is **late** this week.\n")
    one_off = run("send", "--subject", "A note", "--body", "note.md", cwd=tmp_path)
    assert one_off.returncode == 0, one_off.stderr
    assert "edition 2: 5 recipients; 5 sent" in one_off.stdout
    received = messages_by_recipient(maildir)
    assert len(received["zoe@example.org"]) == 1 and len(received["ada.reader@example.org"]) == 2
    note = email_lib.message_from_bytes(
        received["zoe@example.org"][0].as_bytes(), policy=email.policy.default
    )
    assert note["Subject"] == "A note" and "<strong>late</strong>" in note.get_body(("html",)).get_content()
    missing = run("digest", "send", "99", cwd=tmp_path)
    assert missing.returncode == 2 and "there is no edition 99" in missing.stderr


def test_serve_runs_the_web_app(tmp_path):
    import httpx

    from newsletter.devsmtp import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("newsletter serve did not answer")
        assert response.status_code == 200 and "Research digest" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/unsubscribe/forged", timeout=5).status_code == 400
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_subscriber_commands(tmp_path):
    import csv as csv_module
    import io

    (tmp_path / "listmonk.csv").write_text(
        'email,name,attributes\nana@example.org,Ana,"{""team"": ""ml""}"\nbad@,Bob,{}\nbo@example.org,Bo,\n'
    )
    imported = run("subscribers", "import", "listmonk.csv", cwd=tmp_path)
    assert "imported 2 new subscribers; 0 already known; 1 rows rejected" in imported.stdout
    assert "line 3:" in imported.stdout
    added = run(
        "subscribers",
        "add",
        "cy@example.org",
        "--categories",
        "cs.LG, cs.RO",
        "--keywords",
        "diffusion",
        cwd=tmp_path,
    )
    assert added.returncode == 0
    daily = run("subscribers", "add", "dee@example.org", "--frequency", "daily", cwd=tmp_path)
    assert daily.returncode == 2 and "daily digests are not enabled" in daily.stderr

    assert (
        "ana@example.org: unsubscribed"
        in run("subscribers", "unsubscribe", "ana@example.org", cwd=tmp_path).stdout
    )
    assert "ana@example.org: active" in run("subscribers", "confirm", "ANA@example.org", cwd=tmp_path).stdout
    assert "removed bo@example.org" in run("subscribers", "remove", "bo@example.org", cwd=tmp_path).stdout
    missing = run("subscribers", "remove", "bo@example.org", cwd=tmp_path)
    assert missing.returncode == 2 and "is not on the list" in missing.stderr

    exported = run("subscribers", "export", cwd=tmp_path)
    rows = list(csv_module.DictReader(io.StringIO(exported.stdout)))
    assert [row["email"] for row in rows] == ["ana@example.org", "cy@example.org"]
    assert rows[0]["attributes"] == '{"team": "ml"}' and rows[0]["status"] == "active"
    assert rows[1]["categories"] == '["cs.LG","cs.RO"]' and rows[1]["keywords"] == '["diffusion"]'
    assert rows[0]["confirmed_at"] and rows[0]["unsubscribed_at"] == ""  # confirmed again after leaving
    run("subscribers", "export", "out.csv", "--status", "active", cwd=tmp_path)
    assert (tmp_path / "out.csv").read_text().count("@example.org") == 2
    listed = run("subscribers", "list", "--status", "active", "--search", "cy", cwd=tmp_path)
    assert (
        "cy@example.org" in listed.stdout and "ana@" not in listed.stdout and "1 subscriber" in listed.stdout
    )


def test_admin_password_command(tmp_path):
    from newsletter.web.security import verify_password

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "admin-password"],
        input="a long enough password\na long enough password\n",
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    hashed = re.search(r'admin_password_hash = "([^"]+)"', result.stdout).group(1)
    assert verify_password("a long enough password", hashed) and not verify_password("wrong", hashed)
    assert "Traceback" not in result.stderr
    assert "put this in newsletter.toml under [web], or in the environment:" in result.stderr
