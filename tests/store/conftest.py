from pathlib import Path

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def corrupt_sqlite(db: Path, table: str | None) -> None:
    """Garbage over the root page of `table` (the file's header intact), or over the whole file."""
    import sqlite3

    page, size = 4096, db.stat().st_size
    start, end = 0, size
    if table is not None:
        with sqlite3.connect(db) as conn:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        conn.close()
        start, end = (root - 1) * page, root * page
    with db.open("r+b") as f:
        f.seek(start)
        f.write(b"garbage!" * ((end - start) // 8))
