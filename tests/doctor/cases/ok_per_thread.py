"""Correct: each thread opens (and closes) its own connection."""

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

DB = "events.db"
_local = threading.local()


def connection():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=30)
        _local.conn = conn
    return conn


def record(event):
    conn = connection()
    with conn:
        conn.execute("INSERT INTO events (name) VALUES (?)", (event,))


def export(table):
    with sqlite3.connect(DB, timeout=30) as conn:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
    return rows


def main():
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(record, ["a", "b", "c"]))
        pool.submit(export, "events").result()


if __name__ == "__main__":
    main()
