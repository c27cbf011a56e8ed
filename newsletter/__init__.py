"""A self-hosted research-paper newsletter: feeds in, a weekly digest by topic out, by email.

The module map: one line per module, what it owns. The layers go from the bottom up. A module imports
only from its own layer or an earlier one, never from a later one; no modules import each other, through
any path; SQL on a table is written only in the table's owner (a read may join another table). Imports
inside functions are only for heavy engines a command may not need: the optional embeddings engine, and
the clusterer and the personal ranker (scikit-learn), which only the work that clusters or ranks loads. tests/test_layout.py keeps this map and the
code in step.

1. Values: what everything passes around, and rules that need nothing else of the package
   errors          the exception tree; each error carries the exit code a command ends with
   dates           how a moment is written: in the database, and for readers ("1 Dec 2026")
   ids             the keys that decide when two records are the same paper, or two names the same author
   text            feed text (HTML, LaTeX, entities) made plain
   summaries       a paper's summary: the abstract's sentences that say what it does or finds
   models          the records that flow through the pipeline: Paper, ParsedFeed
   logs            log lines, human-readable or JSON, never with a secret
   toml_lines      where in a TOML text each key was written
   config_keys     one configuration key: its type, default and limits, checked and never coerced
   taxonomy        arXiv's categories, the codes a reader can follow
   settings        every setting as a frozen value, each key declared once with its default
   fetched         what a fetch hands on (Document, FetchError), without the HTTP client

2. Reading the world: feeds to papers, and how each kind is configured
   sources/        the source kinds (arXiv RSS and API, Hugging Face daily, any feed): configure and parse
   samples/        the offline sample feeds the demo falls back to
   fetch           HTTP for every source: conditional GET, timeouts, retries, size cap, politeness

3. Configuration
   default_config  the commented file `newsletter init` writes, generated from settings
   config          reads and checks the file and the environment into Settings

4. Storage
   db              opening the SQLite file for shared use, migrations, writable and health checks
   trouble         ordinary trouble (disk, database, port) as one line and an exit code
   locks           locks kept in the database: one sender per edition, one running instance per job

5. Table owners: every statement on a table is its owner's
   store           papers and their keys: each paper stored once, whatever source it came from
   source_log      sources and fetch_runs: each source's conditional-GET state and every fetch
   runs            job_runs: a record of every scheduled run
   tokens          app_secrets and the signed tokens in every email link
   editions        editions and their sections: values, storing, loading, what is public
   preferences     what a reader follows, and the part of an edition that is theirs
   subscribers     subscribers, suppressions, sign-up limits, double opt-in, CSV in and out
   signups         signup_requests: the queue of sign-up emails
   library         reader_signals and library_pending: what each reader liked, hid and keeps, and what waits
   ledger          deliveries and delivery_variants: one row per edition and recipient, its state machine
   bounces         bounces and bounce_runs: every bounce, complaint and auto-reply taken, every mailbox read

6. Engines: work on values, with no tables of their own
   cluster         topic sections and their labels, from text alone
   embeddings      the optional sentence-embedding engine for cluster
   closeness       how close papers are: an edition's word and latent spaces, signalled papers' cached rows
   personal        each reader's ranking of an edition from what they liked, hid and keep: For-you picks, why
   render          Jinja2 and MJML to an email's HTML and text, once per edition
   dkim_sign       DKIM keys, the DNS record that publishes one, each message's signature from parts made once
   message         a rendered email to wire-ready bytes for each recipient
   smtp            the SMTP protocol: connecting, pipelined transactions, replies
   devsmtp         the embedded SMTP server that stores what it receives
   mailbox         the bounce mailbox over IMAP or POP3: each message handed once, then marked processed
   dns_checks      what DNS says about sending as a domain: SPF permits the host, the DKIM record, DMARC
   ingest          fetch every source and store what it yields
   library_items   a reader's items (arXiv ids and URLs, DOIs, BibTeX, RIS, Zotero CSV, lists) read into keys
   library_import  items into a reader's library: found, fetched from the arXiv API by id, or kept pending
   relay_events    a relay's bounce and complaint webhooks (SES/SNS, Postmark, Mailgun, SendGrid): verified, read
   bounce_reports  what a message in the bounce mailbox reports: a hard or soft bounce (DSN or another
                   server's format), a complaint (ARF), an auto-reply, or nothing known

7. Services: one job each, calling owners and engines
   compose         an edition from a window's papers: select, cluster, label, store
   reader_digest   what each reader's digest holds: the edition ranked for them, laid out for their email
   deliver         the sending workers and their pace, over the ledger and smtp
   outbox          sending as the operator sees it: editions, one-offs, test copies, previews, sign-up emails
   signup_sender   the thread of the web app that drains the sign-up queue
   bounce_policy   what a bounce or complaint does: whom it is about (VERP, Message-ID, address), the policy
   bounce_fetch    the bounce mailbox read into the policy, each message taken once, every read recorded
   reader_view     one reader's view of an edition: their signals ranked against its papers
   erasure         forgetting a reader: every record about them, in one transaction
   retention       what old data goes, and consistent backups
   status          what `newsletter status` shows
   doctor          checks of the configuration, database, SMTP server, links, templates and jobs
   jobs            the scheduled jobs: definitions and actions
   scheduler       the jobs on their cron schedules

8. Shells: thin, no SQL
   web/            the web app: sign-up, preferences, a reader's papers and feedback, archive and admin
                   pages, its server and its limits
   cli/            the `newsletter` command, by command group, with everything it prints in show
   __main__        `python -m newsletter`
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("newsletter")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
