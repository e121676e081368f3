"""Correct: one connection shared by threads, every unit of work under one lock."""

import sqlite3
import threading


class Counter:
    def __init__(self, path):
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")
            self._conn.commit()

    def hit(self):
        with self._lock:
            self._conn.execute("INSERT INTO hits VALUES (1)")
            self._conn.commit()

    def total(self):
        self._lock.acquire()
        try:
            return self._conn.execute("SELECT count(*) FROM hits").fetchone()[0]
        finally:
            self._lock.release()


def main():
    counter = Counter("hits.db")
    threads = [threading.Thread(target=counter.hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(counter.total())


if __name__ == "__main__":
    main()
