"""Jobs on a ThreadPoolExecutor, each on its own connection, with read-then-write
transactions started by a plain BEGIN and no busy timeout."""

import sqlite3
from concurrent.futures import ThreadPoolExecutor


def transfer(src, dst, amount):
    conn = sqlite3.connect("bank.db", isolation_level=None)  # expect: LG106
    try:
        conn.execute("BEGIN")  # expect: LG107
        (balance,) = conn.execute("SELECT balance FROM accounts WHERE id = ?", (src,)).fetchone()
        if balance >= amount:
            conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
            conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
        conn.execute("COMMIT")
    finally:
        conn.close()


def audit(account):
    conn = sqlite3.connect("bank.db", timeout=20, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO audit (account) VALUES (?)", (account,))
        conn.execute("COMMIT")
    finally:
        conn.close()


def main():
    with ThreadPoolExecutor(max_workers=8) as executor:
        futures = [executor.submit(transfer, 1, 2, 10) for _ in range(100)]
        futures.append(executor.submit(audit, 1))
        for future in futures:
            future.result()


if __name__ == "__main__":
    main()
