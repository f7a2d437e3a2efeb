"""The original Flask-CQLAlchemy README example, unchanged but for the import."""

import os
import uuid

from flask import Flask

from flask_cqlalchemy import CQLAlchemy

app = Flask(__name__)
# CASSANDRA_HOSTS in the environment points the example at another cluster.
app.config["CASSANDRA_HOSTS"] = os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")
app.config["CASSANDRA_KEYSPACE"] = "cqlengine"
db = CQLAlchemy(app)


class User(db.Model):
    uid = db.columns.UUID(primary_key=True, default=uuid.uuid4)
    username = db.columns.Text(required=False)
