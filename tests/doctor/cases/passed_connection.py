"""A connection made in main() and handed to threads: as an argument, by a closure, and as a
cursor in a global used through run_in_executor."""

import asyncio
import sqlite3
import threading

cursor = None


def write_rows(conn, rows):
    for row in rows:
        conn.execute("INSERT INTO t VALUES (?)", (row,))  # expect: LG101


def main():
    global cursor
    conn = sqlite3.connect("t.db")
    cursor = conn.cursor()  # expect: LG104
    worker = threading.Thread(target=write_rows, args=(conn, [1, 2, 3]))
    worker.start()

    def flush():
        conn.commit()  # expect: LG101

    threading.Thread(target=flush).start()
    asyncio.run(report())


def count_rows():
    cursor.execute("SELECT count(*) FROM t")  # expect: LG101
    return cursor.fetchone()[0]


def last_row():
    cursor.execute("SELECT max(rowid) FROM t")  # expect: LG101
    return cursor.fetchone()[0]


async def report():
    loop = asyncio.get_running_loop()
    print(await loop.run_in_executor(None, count_rows))
    print(await loop.run_in_executor(None, last_row))
