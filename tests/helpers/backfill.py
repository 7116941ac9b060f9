"""Shared by the backfill, follow, backup and view tests: what a correct normalization of raw
epochs is (computed from the parser, independently of the backfill), and snapshots of the
tables the backfill writes, to compare runs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from shareprice.chain.parser import ParseError, parse_document
from shareprice.store import db

#: The backfill's output, each table's rows in key order, without timestamps and run ids
#: (which legitimately differ between two correct runs).
SNAPSHOT_QUERIES = {
    "operator_share_prices": "SELECT * FROM operator_share_prices ORDER BY 1, 2",
    "operator_shares": "SELECT * FROM operator_shares ORDER BY 1, 2",
    "operator_chain_share_prices": "SELECT * FROM operator_chain_share_prices ORDER BY 1, 2, 3",
    "operators_metadata": (
        "SELECT operator_id, name, color, status, nomination_tax, first_seen_epoch, "
        "last_seen_epoch, is_active FROM operators_metadata ORDER BY 1"
    ),
    "epoch_normalizations": (
        "SELECT epoch, revision, operator_count FROM epoch_normalizations ORDER BY 1"
    ),
}


def connect(url: URL) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url), autocommit=True)


def snapshot(url: URL) -> dict[str, list[tuple]]:
    with connect(url) as conn:
        return {t: conn.execute(q).fetchall() for t, q in SNAPSHOT_QUERIES.items()}


def as_int(value: Any) -> Any:
    """Decimal from NUMERIC columns to int (exactly: they hold integers)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    assert value == value.to_integral_value(), value
    return int(value)


@dataclass
class Expected:
    """What the normalized tables must hold for a set of raw documents, per the parser."""

    prices: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)
    shares: dict[tuple[int, int], tuple] = field(default_factory=dict)
    chain: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)
    first_seen: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, tuple[int, str | None, int | None]] = field(default_factory=dict)
    operator_counts: dict[int, int] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


def expected_from_raw(url: URL) -> Expected:
    out = Expected()
    with connect(url) as conn:
        rows = conn.execute("SELECT epoch, data::text FROM epochs ORDER BY epoch").fetchall()
    for epoch, text in rows:
        try:
            record = parse_document(text)
        except ParseError as exc:
            out.failed[epoch] = str(exc)
            continue
        if record.epoch != epoch:  # the backfill refuses a document stored under another epoch
            out.failed[epoch] = f"document says epoch {record.epoch}"
            continue
        out.operator_counts[epoch] = len(record.operators)
        for o in record.operators:
            out.prices[(o.operator_id, epoch)] = (o.share_price_perq, record.format)
            out.shares[(o.operator_id, epoch)] = (
                o.stake,
                o.shares,
                o.storage_fee,
                o.rewards,
                o.status,
                o.nomination_tax,
            )
            out.first_seen.setdefault(o.operator_id, epoch)
            out.last_seen[o.operator_id] = (epoch, o.status, o.nomination_tax)
        for c in record.chain_prices:
            out.chain.setdefault(
                (c.operator_id, c.domain_id, c.domain_epoch), (c.shares_per_stake_perq, epoch)
            )
    return out


def actual(url: URL) -> Expected:
    """The same shape, read from the normalized tables."""
    out = Expected()
    with connect(url) as conn:
        for op, epoch, price, source in conn.execute("SELECT * FROM operator_share_prices"):
            out.prices[(op, epoch)] = (as_int(price), source)
        for op, epoch, stake, shares, fee, rewards, status, tax in conn.execute(
            "SELECT operator_id, epoch, stake_raw, shares_raw, storage_fee_raw, rewards_raw, "
            "status, nomination_tax FROM operator_shares"
        ):
            out.shares[(op, epoch)] = (
                as_int(stake),
                as_int(shares),
                as_int(fee),
                as_int(rewards),
                status,
                tax,
            )
        for op, dom, de, value, seen in conn.execute("SELECT * FROM operator_chain_share_prices"):
            out.chain[(op, dom, de)] = (as_int(value), seen)
        for op, first, last, status, tax in conn.execute(
            "SELECT operator_id, first_seen_epoch, last_seen_epoch, status, nomination_tax "
            "FROM operators_metadata"
        ):
            out.first_seen[op] = first
            out.last_seen[op] = (last, status, tax)
        for epoch, count in conn.execute("SELECT epoch, operator_count FROM epoch_normalizations"):
            out.operator_counts[epoch] = count
    return out


def cli_env(url: URL) -> dict[str, str]:
    """Environment for a `shareprice` subprocess: the URL (with its password) stays out of argv."""
    env = dict(os.environ)
    env["SHAREPRICE_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return env


def start_cli(url: URL, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shareprice", *args],
        env=cli_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(url: URL, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shareprice", *args],
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def insert_documents(url: URL, docs: list[tuple[int, str]]) -> None:
    with connect(url) as conn:
        for epoch, text in docs:
            conn.execute("INSERT INTO epochs (epoch, data) VALUES (%s, %s::jsonb)", (epoch, text))
