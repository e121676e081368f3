"""Correct: a queue-based pool; each connection is used by one thread at a time."""

import queue
import sqlite3
import threading


class Pool:
    def __init__(self, path, size=4):
        self._idle = queue.Queue()
        for _ in range(size):
            conn = sqlite3.connect(path, timeout=15, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._idle.put(conn)

    def run(self, sql, params=()):
        conn = self._idle.get(timeout=5)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            self._idle.put(conn)


def worker(pool, n):
    pool.run("INSERT INTO jobs (n) VALUES (?)", (n,))


def main():
    pool = Pool("jobs.db")
    threads = [threading.Thread(target=worker, args=(pool, n)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
