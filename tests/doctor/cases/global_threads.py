"""Threads adding items through one global connection.

check_same_thread=False silences sqlite3's error, but the threads' statements and commits
interleave in one transaction, and nothing waits for a lock held by another process.
"""

import sqlite3
import threading

conn = sqlite3.connect("items.db", check_same_thread=False)  # expect: LG104, LG106
conn.execute("CREATE TABLE IF NOT EXISTS items (name TEXT)")


def add_item(name):
    conn.execute("INSERT INTO items (name) VALUES (?)", (name,))  # expect: LG102
    conn.commit()  # expect: LG105


def main():
    threads = [threading.Thread(target=add_item, args=(f"item{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.close()


if __name__ == "__main__":
    main()
