"""Dispatcher tests on SQLite and PostgreSQL, on the small site of tests/cases."""

from tests.cases.conftest import site  # noqa: F401
from tests.server.conftest import backend, engine, migrated_url  # noqa: F401
