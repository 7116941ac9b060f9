"""`shareprice nominators`: the terminal twin of the Nominators page and of the API's
`/api/v1/nominators/{address}` and `/api/v1/operators/{id}/nominators`.

Thin: the positions, holders and JSON documents come from `shareprice.queries` (the JSON is the
very document the API returns, built by the same function), the card and table texts from
`shareprice.display.nominator_view` (the page's own wording). Amounts stay exact ints: the table
shows AI3 with 4 decimals (truncated) next to exact Shannons; CSV and JSON carry exact integers.
"""

from __future__ import annotations

import csv
import sys
from typing import Any

import click
import orjson
import polars as pl

from shareprice import queries
from shareprice.cli.common import engine_for, friendly_errors, url_option
from shareprice.display.explorer_state import format_amount
from shareprice.display.nominator_view import concentration_text, holders_table, position_lines
from shareprice.errors import ShareError


class InputError(ShareError, click.ClickException):
    """An address or operator that names nothing: one line on stderr and exit status 2, as
    click's own usage errors, without the usage text (the input was well-formed as options).
    A ShareError too, like every failure the library describes (tests/test_errors.py)."""

    exit_code = 2


#: The columns of `--format csv` per position: the API document's fields, withdrawals flattened.
POSITION_COLUMNS = (
    "operator_id",
    "epoch",
    "since_epoch",
    "shares",
    "value",
    "known_shares",
    "pending_amount",
    "pending_epoch",
    "pending_converted",
    "deposit_on_hold",
    "gain",
    "storage_fee",
    "share_price_perq",
    "share_of_pool",
    "withdrawals",
    "unlock_blocks",
)


def _cell(value: Any) -> Any:
    """A CSV cell: null empty, booleans as JSON spells them (the document's own values)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]) -> None:
    """Exact values as the document holds them (decimal strings), null as an empty cell."""
    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})


def _print_table(frame: pl.DataFrame) -> None:
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        click.echo(frame)


def _account(address: str) -> queries.Account:
    try:
        return queries.resolve_address(address, parameter="ADDRESS")
    except queries.AddressError as exc:
        raise InputError(str(exc)) from None


def _position_cards(view: queries.NominatorView) -> None:
    """One card per operator, with the page's lines, the value also in exact Shannons."""
    head = "unknown" if view.head_domain_number is None else f"{view.head_domain_number:,}"
    click.echo(f"nominator {view.account.ss58} ({view.account.hex})")
    click.echo(
        f"positions at epoch {view.epoch:,} (head domain block {head}); "
        f"total value {format_amount(view.total_value, 'AI3')} AI3"
    )
    if not view.positions:
        click.echo("no open position or withdrawal at that epoch")
    for p in view.positions:
        click.echo(f"\noperator {p.operator_id}")
        lines = position_lines(p, "AI3")
        lines.insert(1, ("Value (Shannons)", "–" if p.value is None else str(p.value)))
        width = max(len(label) for label, _ in lines)
        for label, text in lines:
            click.echo(f"  {label:<{width}}  {text}")


def _history_table(values: pl.DataFrame) -> pl.DataFrame:
    """queries.nominator_history's rows as text: exact shares and Shannons, AI3 beside them."""
    rows = [
        {
            "operator": str(v["operator_id"]),
            "epoch": str(v["epoch"]),
            "effective shares": None
            if v["effective_shares"] is None
            else str(v["effective_shares"]),
            "value (AI3)": "–" if v["value"] is None else format_amount(v["value"], "AI3"),
            "value (Shannons)": "–" if v["value"] is None else str(v["value"]),
        }
        for v in values.iter_rows(named=True)
    ]
    columns = ["operator", "epoch", "effective shares", "value (AI3)", "value (Shannons)"]
    return pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String))


def _show_nominator(url: str | None, address: str, history: bool, fmt: str) -> None:
    account = _account(address)
    engine = engine_for(url)
    if fmt == "table":  # the page's view itself, not the API document built from it
        view = queries.nominator_positions(engine, account.account)
        if not view.known:
            raise InputError(f"ADDRESS: no positions of {account.ss58} are stored")
        _position_cards(view)
        if history:
            click.echo("\nvalue per epoch")
            _print_table(_history_table(queries.nominator_history(engine, account.account)))
        return
    document = queries.nominator_document(engine, account, history=history)
    if document is None:
        raise InputError(f"ADDRESS: no positions of {account.ss58} are stored")
    if fmt == "json":
        click.echo(orjson.dumps(document).decode())
    elif fmt == "csv" and history:
        values = [
            {"operator_id": h["operator_id"], **v} for h in document["history"] for v in h["values"]
        ]
        _write_csv(values, ("operator_id", "epoch", "shares", "value", "deposit_on_hold"))
    else:
        rows = [
            {
                **p,
                "withdrawals": len(p["withdrawals"]),
                "unlock_blocks": ";".join(str(w["unlock_block"]) for w in p["withdrawals"]),
            }
            for p in document["positions"]
        ]
        _write_csv(rows, POSITION_COLUMNS)


def _show_operator(url: str | None, operator_id: int, limit: int, fmt: str) -> None:
    engine = engine_for(url)
    if fmt == "table":
        if not queries.operator_known(engine, operator_id):
            raise InputError(f"--operator: unknown operator id {operator_id}")
        holders = queries.operator_holders(engine, operator_id, limit)
        if holders.epoch is None:
            click.echo(f"operator {operator_id}: no positions data stored")
            return
        click.echo(f"operator {operator_id}: {concentration_text(holders)}")
        table = holders_table(holders, "AI3").with_columns(
            holders.rows["ss58"].alias("Nominator"),
            holders.rows["value"].cast(pl.String).fill_null("–").alias("Value (Shannons)"),
        )
        _print_table(table)
        return
    document = queries.operator_nominators_document(engine, operator_id, limit)
    if document is None:
        raise InputError(f"--operator: unknown operator id {operator_id}")
    if fmt == "json":
        click.echo(orjson.dumps(document).decode())
    else:
        rows = document["nominators"]
        _write_csv(rows, list(rows[0]) if rows else ["rank", "address", "account", "shares"])


@click.command("nominators")
@url_option
@click.argument("address", required=False)
@click.option(
    "--operator",
    "operator_id",
    type=click.IntRange(min=0),
    metavar="ID",
    help="One operator's nominators instead: count, largest holders, top-10 share.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, queries.HOLDERS_MAX_LIMIT),
    default=None,
    metavar="N",
    help="With --operator: at most this many holders, largest first [default: 50].",
)
@click.option("--history", is_flag=True, help="With ADDRESS: add the value per epoch.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="json = the API's document on one line; csv = the positions (with --history: the "
    "value per epoch) or the holders; exact integers throughout.",
)
@friendly_errors
def nominators_cmd(
    url: str | None,
    address: str | None,
    operator_id: int | None,
    limit: int | None,
    history: bool,
    fmt: str,
) -> None:
    """A nominator's positions (ADDRESS: SS58 or 0x + 64 hex) or one operator's nominators.

    For ADDRESS, at the latest epoch with positions, one per operator: value (exact), effective
    shares, share of the pool, principal held, gain, the pending deposit and the epoch it
    converts at the end of, withdrawals with their unlock block. An address that is malformed
    or has nothing stored, or an unknown --operator, is one line on stderr and exit status 2.
    """
    if (address is None) == (operator_id is None):
        raise click.UsageError("give either ADDRESS or --operator ID")
    if address is not None:
        if limit is not None:
            raise click.UsageError("--limit goes with --operator (the holders list)")
        _show_nominator(url, address, history, fmt)
    else:
        assert operator_id is not None
        if history:
            raise click.UsageError("--history goes with ADDRESS (one nominator's values)")
        _show_operator(url, operator_id, 50 if limit is None else limit, fmt)


commands: list[click.Command] = [nominators_cmd]
