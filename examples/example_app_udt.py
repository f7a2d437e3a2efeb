"""The original README's user-defined-type example, unchanged but for the import."""

import os

from flask import Flask

from flask_cqlalchemy import CQLAlchemy

app = Flask(__name__)
# CASSANDRA_HOSTS in the environment points the example at another cluster.
app.config["CASSANDRA_HOSTS"] = os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")
app.config["CASSANDRA_KEYSPACE"] = "cqlengine"
app.config["CASSANDRA_SETUP_KWARGS"] = {"protocol_version": 3}
db = CQLAlchemy(app)


class address(db.UserType):  # noqa: N801 - the original README's name
    street = db.columns.Text()
    zipcode = db.columns.Integer()


class users(db.Model):  # noqa: N801 - the original README's name
    __keyspace__ = "cqlengine"
    name = db.columns.Text(primary_key=True)
    addr = db.columns.UserDefinedType(address)
