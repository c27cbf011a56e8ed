"""Sending benchmark: a real week's edition to 10,000 subscribers through Postfix's smtp-sink.

Every reader has taught the digest something (``--taught``, default 6 papers of the edition liked,
different for each reader, and 2 hidden), so each email has its own "For you" section and its own order
of every topic's papers, as well as its own greeting, links and feedback tokens. Prints messages/s of
``newsletter``'s send (ledger on, one SMTP connection per worker) and the ratio to Postfix's
``smtp-source`` sending messages of the same size over one reused connection to the same sink, measured in
the same run. Target: ratio >= 0.5. ``--dkim rsa|ed25519``: the same edition is also sent signed (a new
key in the temporary directory), to a copy of the same readers, and the run prints both ratios, then the
cost of signing one message measured alone and whether two connections sign in parallel. Then the peak memory of a send to 10,000 and to 100,000 subscribers
(target: under 200 MB and flat), and the time to render one edition. ``--taught 0``: readers who taught
nothing (the edition's order for all).

Needs Postfix's tools (``apt-get install postfix``; the daemon is not needed) and the shared corpus.

    python bench/send.py [--subscribers 10000] [--concurrency 1] [--taught 8] [--dkim rsa] [--memory]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402

from newsletter.compose import build_edition  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.db import open_database, write_transaction  # noqa: E402
from newsletter.devsmtp import free_port  # noqa: E402
from newsletter.dkim_sign import Signer, generate_key, write_key  # noqa: E402
from newsletter.editions import load_edition  # noqa: E402
from newsletter.fetch import Fetcher  # noqa: E402
from newsletter.ingest import run_ingest  # noqa: E402
from newsletter.library import keep_papers  # noqa: E402
from newsletter.message import DigestTemplate, Recipient  # noqa: E402
from newsletter.outbox import copy_message, message_template, reader_digests, send_edition  # noqa: E402
from newsletter.settings import DigestSettings, Settings, SourceConfig  # noqa: E402


def write_config(workdir: Path, port: int, concurrency: int, dkim: str | None = None) -> Path:
    """The configuration; with ``dkim`` (a key kind) a second one, newsletter-dkim.toml, signing with a
    new key of that kind and sending from its own copy of the database."""
    config = workdir / ("newsletter-dkim.toml" if dkim else "newsletter.toml")
    signing = ""
    if dkim:
        write_key(generate_key(dkim), workdir / "dkim.key", force=True)
        signing = '[dkim]\ndomain = "example.org"\nselector = "bench"\nprivate_key_file = "dkim.key"\n'
    config.write_text(
        f"""
[newsletter]
name = "Research Digest"
database = "{"news-dkim.db" if dkim else "news.db"}"
[web]
base_url = "https://news.example.org"
secret_key = "benchmark-secret-key-0123456789"
[smtp]
host = "127.0.0.1"
port = {port}
concurrency = {concurrency}
from = "Research Digest <digest@example.org>"
list_id = "Research Digest <digest.example.org>"
unsubscribe_mailto = "unsubscribe@example.org"
{signing}"""
    )
    return config


def prepare(
    workdir: Path, port: int, concurrency: int, subscribers: int, week: Path, taught: int
) -> tuple[Path, int]:
    """A database with the real week ingested, its edition built, and ``subscribers`` active readers, each
    of whom liked ``taught`` papers of the edition (and hid a quarter as many), drawn at random for each."""
    config = write_config(workdir, port, concurrency)
    settings = load_settings(config, environ={})
    db = open_database(settings.database)
    now = datetime.now(UTC)
    with Fetcher() as fetcher:
        source = SourceConfig(name="week", kind="arxiv_rss", url=week.as_uri())
        run_ingest(db, [source], fetcher, now=now - timedelta(hours=1))
    edition = build_edition(db, DigestSettings(), now=now)
    stamp = now.isoformat(timespec="microseconds")
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at, updated_at) "
            "VALUES (?, ?, 'active', 'bench', ?, ?, ?)",
            ((f"reader{n:06d}@example.org", f"Reader {n}", stamp, stamp, stamp) for n in range(subscribers)),
        )
    if taught:
        papers = [paper.paper_id for section in edition.sections for paper in section.papers]
        draw = random.Random(7)
        reader_ids = [row[0] for row in db.execute("SELECT id FROM subscribers ORDER BY id")]
        with write_transaction(db):
            for reader_id in reader_ids:
                chosen = draw.sample(papers, taught + taught // 4)
                keep_papers(
                    db, reader_id, chosen[:taught], "like", now=now - timedelta(days=draw.randrange(60))
                )
                keep_papers(db, reader_id, chosen[taught:], "dislike", now=now)
    db.close()
    return config, edition.id


class Phases:
    """The send's progress: when it started and when the last reader's copy was laid out (beside the
    sending, ahead of it)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.planned_at: float | None = None

    def __call__(self, outcome: str) -> None:
        if outcome == "planned":
            self.planned_at = time.perf_counter()


def preview(settings: Settings, edition_id: int, reader: int) -> bytes:
    """A reader's whole message as it is sent (to size smtp-source's messages alike)."""
    return copy_message(settings, edition_id, f"reader{reader:06d}@example.org")[1]


def personal_share(settings: Settings, edition_id: int, subscribers: int) -> str:
    """How many of a sample of readers get a "For you" section, and how many papers it holds."""
    db = open_database(settings.database)
    try:
        edition = load_edition(db, edition_id)
        kit = message_template(settings, edition).kit  # type: ignore[attr-defined]
        sample = [row[0] for row in db.execute("SELECT id FROM subscribers ORDER BY id LIMIT 500")]
        layouts = reader_digests(settings, edition).layouts(db, [(reader, kit) for reader in sample])
    finally:
        db.close()
    picks = [
        len(layouts[reader].for_you) for reader in sample if reader in layouts and layouts[reader].for_you
    ]
    distinct = len({layouts[r].for_you for r in sample if r in layouts and layouts[r].for_you})
    if not picks:
        return f"none of {len(sample)} sampled"
    return (
        f"{len(picks)} of {len(sample)} sampled, {sum(picks) / len(picks):.1f} papers each on average, "
        f"{distinct} different sections"
    )


def start_sink(port: int) -> subprocess.Popen[bytes]:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{port}", "1024"], stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return sink


def fresh_copy(pristine: Path, database: Path) -> None:
    """The database as it was before any send (its WAL files gone with the last connection)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, database)


def signing_cost(
    settings: Settings, edition_id: int, signer: Signer, readers: int = 300
) -> tuple[float, float]:
    """Microseconds per message to build a reader's wire bytes without and with the signature (the same
    template and readers, alternating, best of three rounds)."""
    db = open_database(settings.database)
    try:
        edition = load_edition(db, edition_id)
    finally:
        db.close()
    plain = message_template(settings, edition)
    signed = message_template(settings, edition, dkim=signer)
    assert isinstance(plain, DigestTemplate) and isinstance(signed, DigestTemplate)
    recipients = [
        Recipient(f"reader{n}@example.org", f"Reader {n}", f"https://n.example.org/p/{n}",
                  f"https://n.example.org/u/{n}", f"<{n}.bench@example.org>", f"TOKEN{n}")
        for n in range(readers)
    ]  # fmt: skip
    best = {}
    for template in (plain, signed, plain, signed, plain, signed):
        started = time.perf_counter()
        for recipient in recipients:
            template.wire(recipient)
        per_message = (time.perf_counter() - started) / readers * 1e6
        best[template is signed] = min(best.get(template is signed, per_message), per_message)
    return best[False], best[True]


def parallel_signing(signer: Signer, count: int = 400) -> tuple[float, float, float]:
    """Microseconds per signature of a header block, in one thread and in each of two at once."""
    data = b"x" * 700

    def sign(times: int) -> None:
        for _ in range(times):
            signer.key.sign(data)

    started = time.perf_counter()
    sign(count)
    alone = (time.perf_counter() - started) / count * 1e6
    threads = [threading.Thread(target=sign, args=(count,)) for _ in range(2)]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    both = wall / (2 * count) * 1e6
    return alone, both, (time.process_time() - cpu) / wall


def smtp_source(port: int, count: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["smtp-source", "-d", "-s", "1", "-m", str(count), "-l", str(size), "-f", "digest@example.org",
         "-t", "reader@example.org", f"127.0.0.1:{port}"],
        check=True,
    )  # fmt: skip
    return count / (time.perf_counter() - started)


def memory_probe(subscribers: int, concurrency: int, week: Path, taught: int) -> int:
    """Peak RSS (KB) of a fresh process that prepares the data and sends to ``subscribers`` readers."""
    result = subprocess.run(
        [sys.executable, __file__, "--probe", str(subscribers), "--concurrency", str(concurrency),
         "--taught", str(taught), "--corpus", str(week.parent.parent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.strip().splitlines()[-1])


def probe(subscribers: int, concurrency: int, week: Path, taught: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-send-probe-"))
    port = free_port()
    sink = start_sink(port)
    try:
        config, edition_id = prepare(workdir, port, concurrency, subscribers, week, taught)
        # The send as an operator runs it: the `newsletter` program in a process of its own. Its peak is
        # read from /proc (VmHWM) at exit: ru_maxrss would also count the memory of the forking parent.
        code = (
            "import sys\n"
            "from newsletter.cli import main\n"
            f"sys.argv = ['newsletter', '--config', {str(config)!r}, 'digest', 'send', '{edition_id}']\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"the send did not complete: {result.stderr[-500:]}")
        print(result.stdout.strip().splitlines()[-1])
    finally:
        sink.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--taught", type=int, default=6, help="papers each reader liked (0: none)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at 10k and 100k")
    parser.add_argument(
        "--dkim", choices=["rsa", "ed25519"], help="also send signed with a new key of this kind, and compare"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="sends of each kind, alternating; the best counts"
    )
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    corpus.add_argument(parser)
    args = parser.parse_args()
    week = corpus.feed(args.corpus)
    if week is None:
        return 2
    if args.probe:
        probe(args.probe, args.concurrency, week, args.taught)
        return 0
    if not shutil.which("smtp-sink") or not shutil.which("smtp-source"):
        print("needs Postfix's smtp-sink and smtp-source: apt-get install postfix", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-send-"))
    port = free_port()
    sink = start_sink(port)
    try:
        config, edition_id = prepare(workdir, port, args.concurrency, args.subscribers, week, args.taught)
        settings = load_settings(config, environ={})
        signed_settings = None
        pristine = workdir / "pristine.db"  # nothing sent yet: each round starts from a copy
        shutil.copyfile(settings.database, pristine)
        if args.dkim:  # the same readers and edition in a copy of the database, sent signed
            shutil.copyfile(pristine, workdir / "news-dkim.db")
            signed_config = write_config(workdir, port, args.concurrency, dkim=args.dkim)
            signed_settings = load_settings(signed_config, environ={})
        db = open_database(settings.database)
        edition = load_edition(db, edition_id)
        db.close()
        started = time.perf_counter()
        template = message_template(settings, edition)
        render_seconds = time.perf_counter() - started
        rendered = template.kit.email
        sizes = [
            len(preview(settings, edition_id, n))
            for n in range(0, args.subscribers, max(1, args.subscribers // 20))
        ]
        message_size = sum(sizes) // len(sizes)
        for_you = personal_share(settings, edition_id, args.subscribers)

        # smtp-source's rate swings by a third from run to run on a small machine: measure it before
        # and after, and compare with the faster of the two.
        before = smtp_source(port, args.subscribers, message_size)
        ours = 0.0
        signed_rate = None
        rounds = []
        for round_number in range(args.rounds):
            if round_number:
                fresh_copy(pristine, settings.database)
            phases = Phases()
            report = send_edition(settings, edition_id, progress=phases)
            assert report.complete and report.counts == {"sent": args.subscribers}, report.counts
            if report.sent_now / report.seconds > ours:
                ours = report.sent_now / report.seconds
                planning = phases.planned_at - phases.started if phases.planned_at else 0.0
                seconds = report.seconds
            if signed_settings is not None:  # right after, on the same machine in the same state
                if round_number:
                    fresh_copy(pristine, signed_settings.database)
                signed_report = send_edition(signed_settings, edition_id)
                assert signed_report.complete and signed_report.counts == {"sent": args.subscribers}
                rate = signed_report.sent_now / signed_report.seconds
                rounds.append(f"{report.sent_now / report.seconds:.0f} / {rate:.0f}")
                signed_rate = max(signed_rate or 0.0, rate)
        after = smtp_source(port, args.subscribers, message_size)
        reference = max(before, after)

        print(
            f"edition {edition_id}: {edition.paper_count} papers, {len(edition.sections)} topics, "
            f"{rendered.papers_shown} shown in the email ({rendered.per_section} per topic at most)"
        )
        print(
            f"render + compile once: {render_seconds * 1000:.0f} ms; the frame's HTML {len(rendered.html) / 1000:.1f} KB; "
            f"a reader's whole message {message_size / 1000:.1f} KB on average"
        )
        print(f"readers with a 'For you' section: {for_you}")
        print(
            f"smtp-source, same size, 1 reused connection:  {reference:7.0f} msg/s "
            f"(the faster of {before:.0f} before and {after:.0f} after)"
        )
        print(
            f"newsletter send, ledger on, {args.concurrency} connection(s): {ours:7.0f} msg/s "
            f"({args.subscribers} messages in {seconds:.1f} s, the readers' copies laid out beside the "
            f"sending in the first {planning:.1f} s)"
        )
        print(
            f"ratio: {ours / reference:.2f}  (target >= 0.5: {'met' if ours / reference >= 0.5 else 'NOT met'})"
        )
        if signed_settings is not None and signed_rate is not None:
            signer = Signer.from_settings(signed_settings.dkim)
            assert signer is not None
            signed_size = len(preview(signed_settings, edition_id, 0))
            print(
                f"newsletter send, DKIM {signer.key.algorithm}:        {signed_rate:7.0f} msg/s "
                f"(messages {signed_size - len(preview(settings, edition_id, 0))} bytes longer)"
            )
            ratio = signed_rate / reference
            if len(rounds) > 1:
                print(f"each round, unsigned / signed msg/s: {', '.join(rounds)} (the best of each counts)")
            print(
                f"ratio with DKIM: {ratio:.2f}  (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}; "
                f"{signed_rate / ours:.2f} x the unsigned send of this run)"
            )
            without, with_signature = signing_cost(settings, edition_id, signer)
            print(
                f"a reader's message built: {without:.0f} us unsigned, {with_signature:.0f} us signed "
                f"(signing costs {with_signature - without:.0f} us a message)"
            )
            alone, both, cores = parallel_signing(signer)
            print(
                f"{signer.key.algorithm} signature alone: {alone:.0f} us; two threads signing at once: {both:.0f} us "
                f"a signature ({alone / both:.2f} x as many a second, {cores:.2f} cores busy: 2 if the GIL is "
                "released and the machine has a core to spare)"
            )
    finally:
        sink.terminate()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.memory:
        for count in (10_000, 100_000):
            peak = memory_probe(count, args.concurrency, week, args.taught)
            print(f"peak memory of the send to {count:,} subscribers: {peak / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
