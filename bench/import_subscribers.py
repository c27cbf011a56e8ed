"""CSV import benchmark: 100,000 subscribers in listmonk's format into a fresh database.

Prints the time of the first import, of importing the same file again (idempotent: nothing added), and
of exporting everything back to CSV, with rows per second. Target: 100,000 rows in seconds.

    python bench/import_subscribers.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.db import open_database  # noqa: E402
from newsletter.subscribers import export_csv, import_csv  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    path = workdir / "subscribers.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "attributes"])
        for n in range(args.rows):
            attributes = json.dumps({"city": "Lisbon" if n % 2 else "Kyoto", "plan": n % 3})
            writer.writerow([f"reader{n:07d}@example.org", f"Reader Número {n}", attributes])
    db = open_database(workdir / "news.db")

    started = time.perf_counter()
    first = import_csv(db, path)
    first_time = time.perf_counter() - started
    started = time.perf_counter()
    again = import_csv(db, path)
    again_time = time.perf_counter() - started
    started = time.perf_counter()
    buffer = io.StringIO()
    exported = export_csv(db, buffer)
    export_time = time.perf_counter() - started
    db.close()

    assert first.added == args.rows and not first.errors, first
    assert again.added == 0 and again.existing == args.rows, again
    print(f"{args.rows:,} rows ({path.stat().st_size / 1e6:.1f} MB of CSV, listmonk columns)")
    print(f"first import:  {first_time:6.2f} s  ({args.rows / first_time:,.0f} rows/s)")
    print(f"same file again: {again_time:4.2f} s  (nothing added)")
    print(f"export:        {export_time:6.2f} s  ({exported:,} rows, {len(buffer.getvalue()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
