"""The errors the package raises on purpose, in one tree, each with the exit code a command ends with.

Every one is a ``NewsletterError``; ``exit_code`` follows the README's table ("Exit codes"): a
``UsageError`` (2) means the command line, the configuration or the input must change and nothing was
done; any other (1) means the request was right and something failed while doing it. Errors that carry
what their module decides (``fetched.FetchError``, ``locks.LockHeld``) live there, in the same tree. The
built-in base each error also has (``ValueError``, ``LookupError``...) says what kind of mistake it is to code that
does not know this package.
"""

from __future__ import annotations

from pathlib import Path

FAILURE = 1
USAGE = 2
INTERRUPTED = 130


class NewsletterError(Exception):
    """Something the package saw go wrong and can say in one line."""

    exit_code = FAILURE


class UsageError(NewsletterError):
    """What was asked cannot be done as asked: the command line, the configuration or the input must
    change."""

    exit_code = USAGE


# Configuration and storage


class ConfigError(UsageError):
    """The configuration cannot be used; the message names the file and line, or the variable."""


class JobError(UsageError, ValueError):
    """A job definition that cannot be used; the message names the file and the problem."""


class DatabaseMissing(UsageError, FileNotFoundError):
    """``open_database(..., create=False)`` found no database file: ``newsletter init`` makes one."""


class DatabaseReadOnly(NewsletterError, PermissionError):
    """The database file or its directory cannot be written by this process."""


class DatabaseUnusable(UsageError, RuntimeError):
    """The database cannot be opened where it is: its directory cannot be made, or SQLite refused WAL mode
    there. The path has to change, whichever command found it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.filename = str(path)
        self.reason = reason


class LockLost(NewsletterError, RuntimeError):
    """The lock no longer names this acquisition: another holder took it over."""


# Ingest


class SourceError(NewsletterError):
    """The source as a whole produced nothing usable (an error feed, an HTML page, broken XML...)."""


# Editions and readers


class EngineUnavailable(UsageError, RuntimeError):
    """The configured clustering engine cannot run here (an optional dependency is missing)."""


class EditionNotFound(UsageError, LookupError):
    """No edition has that number (or, for the public, none that was published)."""


class SubscriberError(UsageError, ValueError):
    """Input that cannot become a subscriber; the message says why."""


class PreferenceError(UsageError, ValueError):
    """A choice that cannot be stored; the message says which and why."""


class LibraryError(UsageError, ValueError):
    """Something a reader gave for their library that cannot be used as given; the message says why."""


class PaperNotFound(UsageError, LookupError):
    """No stored paper has that id (a mistyped one, or a paper pruned since it was shown)."""


class InvalidToken(NewsletterError, ValueError):
    """A token that was forged, altered, made for something else, or has expired."""


# Rendering and sending


class RenderError(NewsletterError, RuntimeError):
    """A template or the MJML compiler failed: a bug or a broken template, never bad feed text."""


class MessageError(NewsletterError, ValueError):
    """A value that cannot go into a message safely (a header injection attempt, a broken address)."""


class DkimKeyError(UsageError, ValueError):
    """The DKIM private key cannot be used (missing, unreadable, not an RSA or Ed25519 key, too short), or
    cannot be written where asked; the message names the file."""


class SendError(UsageError, RuntimeError):
    """The send cannot start (unknown edition, bad segment...); the message says why."""


class ServerUnavailable(NewsletterError, RuntimeError):
    """The SMTP server could not be reached, refused the login, or left message after message without an
    answer to its final ".": nothing more can be sent now."""


class SendInProgress(NewsletterError, RuntimeError):
    """Another live run (in another process or in this one) is sending this edition."""


# The bounce mailbox


class MailboxError(NewsletterError, RuntimeError):
    """The bounce mailbox could not be read: the server cannot be reached, TLS or the login failed, the
    folder is missing, or the connection broke. Messages already handled stay processed; the rest wait for
    the next run."""


class MailboxUnreachable(MailboxError):
    """No IMAP or POP3 server answered there: an unknown host, a refused connection, a timeout."""


class MailboxTlsError(MailboxError):
    """TLS failed: an untrusted certificate, a handshake on a port that does not speak TLS, or STARTTLS
    not offered (reading on in clear is refused)."""


class MailboxLoginFailed(MailboxError):
    """The server refused the username and password."""


class MailboxFolderMissing(MailboxError):
    """The folder to read does not exist on the server."""


class MailboxUnusable(UsageError, MailboxError):
    """The [bounces] settings cannot be used to read a mailbox (no host, security = "none" for a server
    not on this machine, an unreadable ca_file): nothing was tried."""


# The web app


class ServeError(NewsletterError):
    """The web app cannot start; ``exit_code`` is 2 for a wrong address or port, 1 for a runtime failure."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
