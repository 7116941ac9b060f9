"""Swapping `comprehensive_analytics` between its two definitions, safely.

sql/011_comprehensive_analytics.sql creates both definitions as views of their own
(`comprehensive_analytics_v1` over the raw JSON, `comprehensive_analytics_v2` over the normalized
tables) and installs the public name over v1. Which definition a public view stands for is
recorded in its COMMENT ('shareprice:comprehensive_analytics_v1'), so the state is always
readable and the swap can refuse anything it does not expect:

    state                          use-v2                       rollback
    current v1, no _old            -> current v2, _old = v1     nothing to do (already v1)
    current v2, _old = v1          nothing to do (already v2)   -> current v1, no _old
    anything else                  refused, state explained     refused, state explained

Each swap is one transaction (renames and CREATE VIEW are transactional in PostgreSQL), under
an advisory lock so two swaps cannot interleave; readers see the old view or the new one, never
neither. Grants on the public view are carried over to its replacement. `use-v2` also refuses
while epochs are still pending normalization (v2 would silently miss them) unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from shareprice.errors import ShareError
from shareprice.store import locks

PUBLIC = "comprehensive_analytics"
OLD = "comprehensive_analytics_old"
V1 = "comprehensive_analytics_v1"
V2 = "comprehensive_analytics_v2"
_TAG = "shareprice:"
_LOCK_KEY = locks.ANALYTICS_VIEW_SWAP

#: The columns both definitions return, in order (checked by the tests).
COLUMNS = (
    "epoch",
    "operator_count",
    "active_operator_count",
    "total_stake",
    "total_shares",
    "total_storage_fee",
    "total_rewards",
    "mean_share_price_perq",
    "min_share_price_perq",
    "max_share_price_perq",
)


class ViewSwapRefused(ShareError, RuntimeError):
    """The views are not in the state the requested swap expects; nothing was changed."""


@dataclass(frozen=True)
class ViewState:
    #: 'comprehensive_analytics_v1' / '..._v2' / 'unknown' (not ours) / None (no such view)
    current: str | None
    old: str | None

    def describe(self) -> str:
        def name(value: str | None) -> str:
            return "missing" if value is None else value

        return f"{PUBLIC} = {name(self.current)}, {OLD} = {name(self.old)}"

    @property
    def version(self) -> str | None:
        return {V1: "v1", V2: "v2"}.get(self.current or "")


_DEFINITION = """
SELECT c.relkind, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class AS c
WHERE c.oid = to_regclass(:name)
"""


def _which(conn: Connection, name: str) -> str | None:
    row = conn.execute(text(_DEFINITION), {"name": name}).one_or_none()
    if row is None:
        return None
    comment = row.comment or ""
    if row.relkind != "v" or not comment.startswith(_TAG):
        return "unknown"
    return comment[len(_TAG) :]


def read_state(conn: Connection) -> ViewState:
    return ViewState(current=_which(conn, PUBLIC), old=_which(conn, OLD))


def state(engine: Engine) -> ViewState:
    with engine.connect() as conn:
        return read_state(conn)


def _pending_epochs(conn: Connection) -> int:
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM epochs AS e LEFT JOIN epoch_normalizations AS n "
                "ON n.epoch = e.epoch WHERE n.epoch IS NULL OR n.revision <> e.revision"
            )
        ).scalar_one()
    )


# The replacement gets the grants its predecessor (now comprehensive_analytics_old) had, so a
# read-only dashboard role keeps reading. Role names are quote_ident'ed; privilege types are
# aclexplode's keywords. (No '%' in this text: the driver would take it for a placeholder.)
_INSTALL_V2 = """
CREATE VIEW comprehensive_analytics AS SELECT * FROM comprehensive_analytics_v2;
COMMENT ON VIEW comprehensive_analytics IS 'shareprice:comprehensive_analytics_v2';
DO $$
DECLARE g record;
BEGIN
    FOR g IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee,
               a.privilege_type
        FROM pg_class AS c
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        LEFT JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = 'comprehensive_analytics_old'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE 'GRANT ' || g.privilege_type || ' ON comprehensive_analytics TO ' || g.grantee;
    END LOOP;
END
$$;
"""


def use_v2(engine: Engine, *, force: bool = False) -> str:
    """Swap the public view to v2, keeping v1 as comprehensive_analytics_old. Idempotent."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        current = read_state(conn)
        if current.current == V2 and current.old == V1:
            return f"already on v2 ({OLD} keeps v1 for a rollback)"
        if not (current.current == V1 and current.old is None):
            raise ViewSwapRefused(
                f"refusing to swap: expected {PUBLIC} = {V1} and no {OLD}, found "
                f"{current.describe()}"
            )
        pending = _pending_epochs(conn)
        if pending and not force:
            raise ViewSwapRefused(
                f"refusing to swap: {pending} epochs are not normalized yet, so v2 would miss "
                "them; run `shareprice backfill` first (or pass --force)"
            )
        conn.execute(
            text("ALTER VIEW comprehensive_analytics RENAME TO comprehensive_analytics_old")
        )
        conn.exec_driver_sql(_INSTALL_V2)
    return f"{PUBLIC} now reads the normalized tables (v2); v1 kept as {OLD}"


def rollback(engine: Engine) -> str:
    """Swap back to the view kept as comprehensive_analytics_old (v1). Idempotent."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        current = read_state(conn)
        if current.current == V1 and current.old is None:
            return "already on v1 (nothing to roll back)"
        if not (current.current == V2 and current.old == V1):
            raise ViewSwapRefused(
                f"refusing to roll back: expected {PUBLIC} = {V2} and {OLD} = {V1}, found "
                f"{current.describe()}"
            )
        conn.execute(text("DROP VIEW comprehensive_analytics"))
        conn.execute(
            text("ALTER VIEW comprehensive_analytics_old RENAME TO comprehensive_analytics")
        )
    return f"{PUBLIC} reads the raw documents again (v1); {OLD} removed"


_DIFF = """
SELECT 'only in v1' AS side, d.* FROM (
    SELECT * FROM comprehensive_analytics_v1 WHERE epoch BETWEEN :lo AND :hi
    EXCEPT ALL
    SELECT * FROM comprehensive_analytics_v2 WHERE epoch BETWEEN :lo AND :hi
) AS d
UNION ALL
SELECT 'only in v2', d.* FROM (
    SELECT * FROM comprehensive_analytics_v2 WHERE epoch BETWEEN :lo AND :hi
    EXCEPT ALL
    SELECT * FROM comprehensive_analytics_v1 WHERE epoch BETWEEN :lo AND :hi
) AS d
ORDER BY 2, 1
"""


# The newest raw epoch: the end of a `views status --compare N` range (v1 reads raw epochs).
_LATEST_RAW_EPOCH = "SELECT max(epoch) FROM epochs"


def latest_raw_epoch(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(text(_LATEST_RAW_EPOCH)).scalar()


def differences(engine: Engine, lo: int = 0, hi: int = 2**31 - 1, limit: int = 20) -> list[tuple]:
    """Rows that differ between v1 and v2 over an epoch range (empty = identical)."""
    with engine.connect() as conn:
        rows = conn.execute(text(_DIFF), {"lo": lo, "hi": hi}).all()
    return [tuple(r) for r in rows[:limit]]
