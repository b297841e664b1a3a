"""PostgreSQL for the study tests: they skip, with the reason, where no server answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("SKIPNAS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def postgres_unavailable() -> str | None:
    """None when the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(_libpq(PG_URL), connect_timeout=3):
            return None
    except Exception as exc:
        return f"no PostgreSQL server answers at {PG_URL} ({exc.__class__.__name__})"


@pytest.fixture
def postgres_url() -> str:
    """The test server's URL (``SKIPNAS_TEST_POSTGRES``, default the local ``test`` database)."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    return PG_URL


@pytest.fixture
def new_postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a database created for this test (no tables yet), dropped afterwards."""
    import psycopg

    name = f"skipnas_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
