"""A small Flask application; any WSGI callable runs unchanged under prefork-http:

    pip install flask
    prefork-http --chdir examples --workers 2 flask_app:app
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "<h1>Hello from Flask</h1>\n"


@app.post("/echo")
def echo():
    return jsonify({"you sent": request.get_json()})


@app.get("/users/<int:user_id>")
def user(user_id):
    return jsonify({"id": user_id})
