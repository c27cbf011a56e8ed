"""Forgetting a reader (a deletion request): every record about them, in one transaction.

This is the one place a reader is forgotten: a table that comes to keep something about a reader adds its
deletion here, through the table's owner.
"""

from __future__ import annotations

import sqlite_utils

from newsletter.bounces import forget_address
from newsletter.db import write_transaction
from newsletter.ledger import delete_deliveries_to
from newsletter.library import delete_reader_library
from newsletter.signups import forget_requests
from newsletter.subscribers import delete_subscriber, get_subscriber


def forget_subscriber(db: sqlite_utils.Database, subscriber_id: int) -> bool:
    """Delete the subscriber, their delivery records and everything they taught (liked, hidden and library
    papers, pending items; their follows are on their row), the bounces and complaints about them and their
    sign-ups still queued; False when there was no such subscriber."""
    with write_transaction(db):
        subscriber = get_subscriber(db, subscriber_id)
        if subscriber is not None:
            forget_address(db, subscriber.email, subscriber_id)
            forget_requests(db, subscriber.email, subscriber_id)
        delete_deliveries_to(db, subscriber_id)
        delete_reader_library(db, subscriber_id)
        return delete_subscriber(db, subscriber_id)
