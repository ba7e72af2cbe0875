"""Alembic migrations of the server database (run by ``sync_server.db.upgrade``)."""
