"""CSV import benchmark: subscribers in listmonk's format into a fresh database.

Prints the time of the first import, of importing the same file again (idempotent: nothing added), and
of exporting everything back to CSV, with rows per second. Target: 100,000 rows in seconds.

With ``--memory`` it measures instead the peak memory (VmHWM) of ``newsletter subscribers import`` run
as an operator runs it, in a process of its own, next to the peak of the same program doing nothing
(``newsletter --version``) in the same run. Target: flat, whatever the number of rows.

    python bench/import_subscribers.py [--rows 100000] [--memory]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.db import open_database  # noqa: E402
from newsletter.subscribers import export_csv, import_csv  # noqa: E402

# The program as an operator runs it; its peak is read from /proc at exit (ru_maxrss of a child would
# also count what the forking parent had).
PEAK_OF_CLI = (
    "import sys\n"
    "from newsletter.cli import main\n"
    "sys.argv = ['newsletter', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
)


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "attributes"])
        for n in range(rows):
            attributes = json.dumps({"city": "Lisbon" if n % 2 else "Kyoto", "plan": n % 3})
            writer.writerow([f"reader{n:07d}@example.org", f"Reader Número {n}", attributes])


def peak_kb(*args: str, cwd: Path) -> tuple[int, float]:
    """Peak RSS (KB) and seconds of ``newsletter ARGS`` in a fresh process."""
    started = time.perf_counter()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever is installed
    result = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CLI, *args], cwd=cwd, env=environment, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"newsletter {' '.join(args)} failed: {result.stderr[-800:]}")
    return int(result.stdout.strip().splitlines()[-1]), seconds


def measure_memory(workdir: Path, path: Path, rows: int) -> None:
    database = str(workdir / "memory.db")
    idle, _ = peak_kb("--db", database, "--version", cwd=workdir)
    peak, seconds = peak_kb("--db", database, "subscribers", "import", str(path), cwd=workdir)
    print(f"peak memory (VmHWM) of `newsletter subscribers import` for {rows:,} rows: {peak / 1024:.0f} MB")
    print(f"  the same program doing nothing (--version):            {idle / 1024:.0f} MB")
    print(f"  import took {seconds:.1f} s ({rows / seconds:,.0f} rows/s, start-up included)")


def measure_speed(workdir: Path, path: Path, rows: int) -> None:
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

    assert first.added == rows and not first.errors, first
    assert again.added == 0 and again.existing == rows, again
    print(f"first import:  {first_time:6.2f} s  ({rows / first_time:,.0f} rows/s)")
    print(f"same file again: {again_time:4.2f} s  (nothing added)")
    print(f"export:        {export_time:6.2f} s  ({exported:,} rows, {len(buffer.getvalue()) / 1e6:.1f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--memory", action="store_true", help="measure the peak memory of the import program instead"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        path = workdir / "subscribers.csv"
        write_csv(path, args.rows)
        print(f"{args.rows:,} rows ({path.stat().st_size / 1e6:.1f} MB of CSV, listmonk columns)")
        if args.memory:
            measure_memory(workdir, path, args.rows)
        else:
            measure_speed(workdir, path, args.rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
