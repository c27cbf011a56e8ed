"""The SMTP protocol as the sender speaks it: opening a connection (TLS, STARTTLS, login; certificates
always verified), the transaction of one message (pipelined when the server allows), a single message
outside any ledger, and replies and errors in words. Knows nothing of the ledger or of who reads what.
"""

from __future__ import annotations

import smtplib
import ssl

from newsletter.errors import ServerUnavailable
from newsletter.settings import SmtpSettings


class Reply(Exception):
    """An SMTP reply other than the expected one, at a stage of the transaction."""

    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(f"{code} {text} (at {stage})")
        self.code = code
        self.text = text
        self.stage = stage


# --- the connection -------------------------------------------------------------------------------------------


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """Certificates verified against the system's CAs, or against ``ca_file`` (a private relay's CA)."""
    return ssl.create_default_context(cafile=settings.ca_file or None)


def connect(settings: SmtpSettings, context: ssl.SSLContext) -> smtplib.SMTP:
    """The connection to the server, TLS from the first byte when ``tls`` is set; no command sent yet."""
    if settings.tls:
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)


def start_tls(smtp: smtplib.SMTP, context: ssl.SSLContext) -> None:
    """STARTTLS, then EHLO again: what the server announced before encryption no longer holds."""
    smtp.starttls(context=context)
    smtp.ehlo()


def open_smtp(settings: SmtpSettings) -> smtplib.SMTP:
    """Connect, EHLO, STARTTLS and log in as configured."""
    context = tls_context(settings)
    smtp = connect(settings, context)
    try:
        smtp.ehlo()
        if settings.starttls:
            start_tls(smtp, context)
        if settings.username:
            smtp.login(settings.username, settings.password)
    except BaseException:
        smtp.close()
        raise
    return smtp


# --- one message on an open connection ------------------------------------------------------------------------


def begin_message(smtp: smtplib.SMTP, sender: str, address: str) -> None:
    """MAIL FROM, RCPT TO and DATA; in one write when the server announces PIPELINING (RFC 2920).
    Raises ``Reply`` for a refusal; the connection is then ready for ``reset``."""
    if smtp.has_extn("pipelining"):
        smtp.send(
            f"MAIL FROM:{smtplib.quoteaddr(sender)}\r\nRCPT TO:{smtplib.quoteaddr(address)}\r\nDATA\r\n"
        )
        replies = [smtp.getreply(), smtp.getreply(), smtp.getreply()]
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            smtp.send(b".\r\n")  # a server that opened DATA anyway gets an empty, refused message
            smtp.getreply()
        if mail_code != 250:
            raise Reply(mail_code, reply_text(mail_text), "MAIL FROM")
        if rcpt_code not in (250, 251):
            raise Reply(rcpt_code, reply_text(rcpt_text), "RCPT TO")
        if data_code != 354:
            raise Reply(data_code, reply_text(data_text), "DATA")
        return
    code, text = smtp.mail(sender)
    if code != 250:
        raise Reply(code, reply_text(text), "MAIL FROM")
    code, text = smtp.rcpt(address)
    if code not in (250, 251):
        raise Reply(code, reply_text(text), "RCPT TO")
    code, text = smtp.docmd("DATA")
    if code != 354:
        raise Reply(code, reply_text(text), "DATA")


def send_content(smtp: smtplib.SMTP, payload: bytes) -> None:
    """The message itself, already dot-stuffed and CRLF-terminated, without the final "."."""
    smtp.send(payload)


def end_message(smtp: smtplib.SMTP) -> None:
    """The final "."; the server's answer is read by ``final_reply``, so the caller can work meanwhile."""
    smtp.send(b".\r\n")


def final_reply(smtp: smtplib.SMTP) -> tuple[int, str]:
    """The server's answer to the final ".": 250 means the message is accepted."""
    code, text = smtp.getreply()
    return code, reply_text(text)


def reset(smtp: smtplib.SMTP) -> bool:
    """RSET after a refused message; False when the connection is no longer usable."""
    try:
        smtp.rset()
    except (smtplib.SMTPException, OSError):
        return False
    return True


def send_single(settings: SmtpSettings, envelope_from: str, address: str, message: bytes) -> str:
    """One message outside any ledger (a test copy, a confirmation email); returns the server's reply."""
    smtp = open_smtp(settings)
    try:
        refused = smtp.sendmail(envelope_from, [address], message)
        if refused:
            code, text = refused[address]
            raise ServerUnavailable(f"{code} {reply_text(text)}")
        return "250 accepted"
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


# --- in words -------------------------------------------------------------------------------------------------


def reply_text(value: bytes | str) -> str:
    """A reply's text on one line."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())


def describe(error: BaseException | None) -> str:
    """An SMTP or connection error as an operator reads it: the server's reply, or the system's words."""
    if error is None:
        return "unknown error"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {reply_text(error.smtp_error)}"
    return str(error) or type(error).__name__
