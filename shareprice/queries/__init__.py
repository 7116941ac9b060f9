"""The one query layer: what pages, the CLI and the HTTP API ask of the normalized tables.

A request model (`SeriesRequest`), the v2 series and all-operators band with their query plans,
operators with yields, epochs, dates and the data version, and the v1 baseline that parses the
raw JSON the old way (kept, measured, for comparison). Every statement is named, commented, runs
with a time limit and bound parameters, and is timed into the current `trace()`.

Callers import this package, never its modules: what is listed here is the contract. The
modules: `request` (the request model, windows, filters), `connection` (timed connections,
`trace()`, COPY into frames), `frames` (exact frames), `series` (v2 series and downsampling),
`band` (the all-operators band), `baseline_v1` (the old JSON path), `operator_table` (operators
and yields, with `yields`), `epochs` (data version, summary, epoch rate, dates), `replica`,
`api_rows` (the old HTTP API's epoch rows, summary and raw documents), `nominators` (nominator
positions, their value history and events, holders per operator).

May import: shareprice.chain, shareprice.store, shareprice.errors, polars, psycopg.
"""

from shareprice.chain.records import PERQ
from shareprice.queries.api_rows import (
    EPOCH_ROWS_MAX_CELLS,
    EPOCH_ROWS_MAX_LIMIT,
    EPOCH_ROWS_MAX_OPERATORS,
    EPOCH_ROWS_MAX_SAMPLE,
    EPOCH_ROWS_OPERATOR_CAP,
    EpochRows,
    EpochRowsError,
    epoch_rows,
    epoch_rows_statement,
    epoch_rows_v1,
    epochs_health,
    latest_epoch_summary,
    raw_epochs,
    sample_evenly,
)
from shareprice.queries.band import (
    BAND_COLUMNS,
    BAND_EXACT_SCHEMA,
    band_live,
    band_plan,
    band_v2,
    downsample_band_rows,
    finish_band,
    percentile_disc,
)
from shareprice.queries.baseline_v1 import (
    band_v1,
    raw_documents_plan,
    series_v1,
)
from shareprice.queries.connection import (
    QueryTiming,
    Trace,
    connect,
    trace,
)
from shareprice.queries.epochs import (
    DataSummary,
    data_version,
    epoch_date_labels,
    epoch_dates,
    epoch_rate,
    summary,
)
from shareprice.queries.frames import (
    frames_equal,
    perq_to_decimal,
)
from shareprice.queries.nominators import (
    HOLDERS_MAX_LIMIT,
    TOP_HOLDERS,
    Account,
    AddressError,
    Holders,
    NominatorView,
    Position,
    PositionsEpoch,
    Withdrawal,
    latest_positions_epoch,
    nominator_counts,
    nominator_events,
    nominator_history,
    nominator_positions,
    operator_holders,
    operator_known,
    resolve_address,
    share_perq,
)
from shareprice.queries.operator_table import (
    add_yields,
    largest_operators,
    operators,
    operators_plan,
)
from shareprice.queries.replica import ReplicaStatus, replica_status
from shareprice.queries.request import (
    DEFAULT_MAX_POINTS,
    Plan,
    RequestError,
    SeriesRequest,
    Window,
)
from shareprice.queries.series import (
    SERIES_EXACT_SCHEMA,
    buckets_for,
    change_key,
    downsample_rows,
    empty_series,
    finish_series,
    resolve_window_v2,
    series_plan,
    series_v2,
)
from shareprice.queries.totals import (
    TOTALS_SCHEMA,
    DomainSummary,
    domain_summary,
    epoch_blocks,
    epoch_holes,
    epoch_totals,
    totals_plan,
)

__all__ = [
    "HOLDERS_MAX_LIMIT",
    "TOP_HOLDERS",
    "Account",
    "AddressError",
    "Holders",
    "NominatorView",
    "Position",
    "PositionsEpoch",
    "Withdrawal",
    "latest_positions_epoch",
    "nominator_counts",
    "nominator_events",
    "nominator_history",
    "nominator_positions",
    "operator_holders",
    "operator_known",
    "resolve_address",
    "share_perq",
    "TOTALS_SCHEMA",
    "DomainSummary",
    "domain_summary",
    "epoch_blocks",
    "epoch_holes",
    "epoch_totals",
    "totals_plan",
    "BAND_COLUMNS",
    "BAND_EXACT_SCHEMA",
    "DEFAULT_MAX_POINTS",
    "DataSummary",
    "EPOCH_ROWS_MAX_CELLS",
    "EPOCH_ROWS_MAX_LIMIT",
    "EPOCH_ROWS_MAX_OPERATORS",
    "EPOCH_ROWS_MAX_SAMPLE",
    "EPOCH_ROWS_OPERATOR_CAP",
    "EpochRows",
    "EpochRowsError",
    "PERQ",
    "Plan",
    "QueryTiming",
    "ReplicaStatus",
    "RequestError",
    "SERIES_EXACT_SCHEMA",
    "SeriesRequest",
    "Trace",
    "Window",
    "add_yields",
    "band_live",
    "band_plan",
    "band_v1",
    "band_v2",
    "buckets_for",
    "change_key",
    "connect",
    "data_version",
    "downsample_band_rows",
    "downsample_rows",
    "empty_series",
    "epoch_date_labels",
    "epoch_dates",
    "epoch_rate",
    "epoch_rows",
    "epoch_rows_statement",
    "epoch_rows_v1",
    "epochs_health",
    "finish_band",
    "finish_series",
    "frames_equal",
    "largest_operators",
    "latest_epoch_summary",
    "operators",
    "operators_plan",
    "percentile_disc",
    "perq_to_decimal",
    "raw_documents_plan",
    "raw_epochs",
    "replica_status",
    "resolve_window_v2",
    "sample_evenly",
    "series_plan",
    "series_v1",
    "series_v2",
    "summary",
    "trace",
]
