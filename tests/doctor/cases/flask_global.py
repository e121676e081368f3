"""A Flask app with a module-level connection used by its (threaded) route handlers."""

import sqlite3

from flask import Flask, jsonify, request

app = Flask(__name__)
db = sqlite3.connect("shop.db")  # expect: LG104


@app.route("/products")
def products():
    rows = db.execute("SELECT id, name FROM products").fetchall()  # expect: LG101
    return jsonify(rows)


@app.post("/products")
def add_product():
    db.execute("INSERT INTO products (name) VALUES (?)", (request.json["name"],))  # expect: LG101
    db.commit()
    return jsonify({"ok": True})


@app.get("/health")
def health():
    db.execute("SELECT 1")  # litegate: ignore[LG101]
    return "ok"
