"""Forgetting a reader (a deletion request): every record about them, in one transaction.

This is the one place a reader is forgotten: a table that comes to keep something about a reader adds its
deletion here, through the table's owner.
"""

from __future__ import annotations

import sqlite_utils

from newsletter.db import write_transaction
from newsletter.ledger import delete_deliveries_to
from newsletter.subscribers import delete_subscriber


def forget_subscriber(db: sqlite_utils.Database, subscriber_id: int) -> bool:
    """Delete the subscriber and their delivery records; False when there was no such subscriber."""
    with write_transaction(db):
        delete_deliveries_to(db, subscriber_id)
        return delete_subscriber(db, subscriber_id)
