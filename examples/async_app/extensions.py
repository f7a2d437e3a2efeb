"""The extension object, created unbound so the app factory can bind it.

Models import ``adb`` from here; ``create_app`` calls ``adb.init_app(app)``.
"""

from flask_cqlalchemy.aio import AsyncCQLAlchemy

adb = AsyncCQLAlchemy()
