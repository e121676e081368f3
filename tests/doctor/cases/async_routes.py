"""FastAPI async routes calling sqlite3 directly: every query blocks the event loop."""

import sqlite3

from fastapi import FastAPI

app = FastAPI()
db = sqlite3.connect("notes.db", check_same_thread=False)


def fetch_note(note_id):
    return db.execute("SELECT body FROM notes WHERE id = ?", (note_id,)).fetchone()


@app.get("/notes/{note_id}")
async def get_note(note_id: int):
    row = fetch_note(note_id)  # expect: LG103
    return {"body": row[0]}


@app.post("/notes")
async def add_note(body: str):
    cur = db.execute("INSERT INTO notes (body) VALUES (?)", (body,))  # expect: LG103
    db.commit()  # expect: LG103
    return {"id": cur.lastrowid}


@app.get("/export")
async def export():
    conn = sqlite3.connect("notes.db")  # expect: LG103
    try:
        return conn.execute("SELECT * FROM notes").fetchall()  # expect: LG103
    finally:
        conn.close()  # expect: LG103
