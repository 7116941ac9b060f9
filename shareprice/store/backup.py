"""Backups that restore: a pg_dump custom-format dump plus a manifest to check it against.

The old system's "backup" was a JSON file of table statistics. Here a backup directory
(`backups/<UTC timestamp>/`) holds

- `shareprice.dump`: `pg_dump --format=custom` from the client matching the server's major
  version (the embedded server ships its own);
- `manifest.json`: server version, and per table the row count and a checksum computed in SQL
  on the SAME snapshot pg_dump reads (`pg_export_snapshot()` + `pg_dump --snapshot`), so a
  backfill writing meanwhile cannot make the manifest disagree with the dump; sequence values;
  the dump's size and sha256.

A table's checksum is order-independent: the sum of a 64-bit hash of every row
(`hash_record_extended(row, 0)`, the hash PostgreSQL's hash partitioning relies on staying
stable), so it needs no sort of 3.5 million rows and runs at scan speed. A table with a column
type that has no hash function falls back to the md5 of each row's text.

`restore_backup` loads a dump into an EMPTY database (or, with force, over an existing one) and
verifies counts and checksums against the manifest; `verify_backup` checks a backup without
touching any existing database: the dump's sha256, `pg_restore --list`, and a restore into a
scratch database that is dropped afterwards.

Passwords reach pg_dump / pg_restore through PGPASSWORD in their environment, never argv.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, Engine

from shareprice.errors import ShareError
from shareprice.store import config, db

MANIFEST = "manifest.json"
DUMP = "shareprice.dump"
FORMAT = "shareprice-backup/1"
DEFAULT_COMPRESSION = "gzip:1"  # JSON compresses ~6x even at level 1; higher levels cost minutes

_ROW_HASH = "hash_record_extended"
_ROW_MD5 = "md5-of-row-text"


class BackupError(ShareError, RuntimeError):
    """A backup or restore that did not do its job; the message is safe to print."""


@dataclass
class TableCheck:
    table: str
    rows: int
    checksum: str
    method: str


@dataclass
class Comparison:
    """A database (or restore) against a manifest."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0


@dataclass
class BackupResult:
    directory: Path
    dump_bytes: int
    seconds: float
    dump_seconds: float
    checksum_seconds: float
    manifest: dict[str, Any]


@dataclass
class RestoreResult:
    database: str
    seconds: float
    restore_seconds: float
    comparison: Comparison


# --- connection helpers ------------------------------------------------------------------------


def _conninfo(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that carries it."""
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    bare = url.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _run_tool(args: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        message = config.mask_secrets((proc.stderr or proc.stdout).strip()[-2000:])
        raise BackupError(f"{what} failed (exit {proc.returncode}): {message}")
    return proc


def _psycopg(url: URL, **kwargs: Any) -> psycopg.Connection:
    try:
        return db.connect(url, **kwargs)
    except db.DatabaseUnavailable as exc:
        raise BackupError(str(exc)) from None


# --- checksums -----------------------------------------------------------------------------------

_TABLES = """
SELECT c.relname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""

_SEQUENCES = """
SELECT sequencename, last_value FROM pg_sequences
WHERE schemaname = current_schema() ORDER BY sequencename
"""


def _table_check(cur: psycopg.Cursor, table: str) -> TableCheck:
    ident = sql.Identifier(table)
    # hash_record_extended needs a hash function for every column type; savepoint so a table
    # without one can fall back to hashing each row's text.
    try:
        with cur.connection.transaction():
            cur.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(sum(hash_record_extended(t.*, 0)::numeric), 0) "
                    "FROM {} AS t"
                ).format(ident)
            )
            rows, total = db.one(cur)
            method = _ROW_HASH
    except psycopg.errors.UndefinedFunction:
        cur.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))"
                "::bit(64)::bigint::numeric), 0) FROM {} AS t"
            ).format(ident)
        )
        rows, total = db.one(cur)
        method = _ROW_MD5
    return TableCheck(table, int(rows), str(total), method)


def database_checks(conn: psycopg.Connection) -> tuple[list[TableCheck], dict[str, int]]:
    """Row count and checksum of every table of the current schema, and sequence values."""
    cur = conn.cursor()
    tables = [r[0] for r in cur.execute(_TABLES).fetchall()]
    checks = [_table_check(cur, t) for t in tables]
    sequences = {
        name: int(value) for name, value in cur.execute(_SEQUENCES).fetchall() if value is not None
    }
    return checks, sequences


def compare(manifest: dict[str, Any], conn: psycopg.Connection) -> Comparison:
    checks, sequences = database_checks(conn)
    found = {c.table: c for c in checks}
    expected: dict[str, dict[str, Any]] = manifest["tables"]
    problems = []
    for table, want in expected.items():
        got = found.get(table)
        if got is None:
            problems.append(f"table {table} is missing")
        elif got.rows != want["rows"]:
            problems.append(f"table {table}: {got.rows} rows, the manifest says {want['rows']}")
        elif got.checksum != want["checksum"]:
            problems.append(f"table {table}: checksum differs from the manifest")
    for table in sorted(set(found) - set(expected)):
        problems.append(f"table {table} is not in the manifest")
    for name, value in manifest.get("sequences", {}).items():
        if sequences.get(name) != value:
            problems.append(f"sequence {name}: {sequences.get(name)}, the manifest says {value}")
    return Comparison(
        ok=not problems,
        problems=problems,
        tables=len(expected),
        rows=sum(int(t["rows"]) for t in expected.values()),
    )


# --- backup --------------------------------------------------------------------------------------


def _timestamp_dir(parent: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = parent / stamp
    n = 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stamp}-{n}"
    return candidate


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def create_backup(
    engine: Engine,
    parent: Path = Path("backups"),
    *,
    compression: str = DEFAULT_COMPRESSION,
    echo: Callable[[str], None] | None = None,
) -> BackupResult:
    """Dump the database into parent/<UTC timestamp>/ with a manifest (see module docstring)."""
    started = time.perf_counter()
    say = echo or (lambda _text: None)
    pg_dump = db.pg_tool("pg_dump", engine)
    directory = _timestamp_dir(parent)
    directory.mkdir(parents=True)
    dump_path = directory / DUMP
    url = engine.url
    conninfo, env = _conninfo(config.normalize_url(url))
    with _psycopg(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = db.one(conn.execute("SELECT pg_export_snapshot()"))[0]
        version = db.one(conn.execute("SHOW server_version"))[0]
        database = db.one(conn.execute("SELECT current_database()"))[0]
        say(f"dumping {database} with {pg_dump.name} {_tool_version(pg_dump)} ...")
        # pg_dump reads the exported snapshot while this transaction stays open.
        dump_started = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(pg_dump),
                "--format=custom",
                f"--compress={_compress_arg(compression, db.tool_major(pg_dump))}",
                f"--snapshot={snapshot}",
                "--no-owner",
                "--no-privileges",
                f"--file={dump_path}",
                f"--dbname={conninfo}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Checksums on the same snapshot, while pg_dump runs (two server processes, two cores).
        checksum_started = time.perf_counter()
        checks, sequences = database_checks(conn)
        checksum_seconds = time.perf_counter() - checksum_started
        _out, err = proc.communicate()
        dump_seconds = time.perf_counter() - dump_started
        conn.commit()
    if proc.returncode != 0:
        raise BackupError(
            f"pg_dump failed (exit {proc.returncode}): {config.mask_secrets(err.strip()[-2000:])}"
        )
    manifest = {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": database,
        "server_version": version,
        "dump": {
            "file": DUMP,
            "bytes": dump_path.stat().st_size,
            "sha256": _sha256(dump_path),
            "tool": f"pg_dump {_tool_version(pg_dump)}",
            "compression": compression,
        },
        "checksum": (
            "per table: count(*) and sum(hash_record_extended(row, 0)) as a decimal string "
            "(md5-of-row-text where a column type has no hash function)"
        ),
        "tables": {
            c.table: {"rows": c.rows, "checksum": c.checksum, "method": c.method} for c in checks
        },
        "sequences": sequences,
    }
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return BackupResult(
        directory=directory,
        dump_bytes=manifest["dump"]["bytes"],
        seconds=time.perf_counter() - started,
        dump_seconds=dump_seconds,
        checksum_seconds=checksum_seconds,
        manifest=manifest,
    )


def _compress_arg(spec: str, major: int) -> str:
    """pg_dump before 16 takes only a gzip level ('1'), not 'method:level' ('gzip:1')."""
    if major >= 16:
        return spec
    method, _, level = spec.partition(":")
    if method == "none":
        return "0"
    if method == "gzip":
        return level or "6"
    if method.isdigit():
        return method
    raise BackupError(f"pg_dump {major} supports only gzip compression, not {spec!r}")


def _tool_version(path: Path) -> str:
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
    return out.strip().split()[-1] if out.strip() else "?"


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupError(f"{directory} is not a backup: no {MANIFEST}")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BackupError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown format {manifest.get('format')!r}")
    if not (directory / manifest["dump"]["file"]).is_file():
        raise BackupError(f"{directory}: the dump file {manifest['dump']['file']} is missing")
    return manifest


# --- restore -------------------------------------------------------------------------------------

_USER_OBJECTS = """
SELECT count(*) FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
"""


def restore_backup(
    directory: Path,
    into: str | URL,
    *,
    force: bool = False,
    jobs: int = 2,
    echo: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Restore a backup into the database at `into` and verify it against the manifest.

    Refuses a database that holds any table, view or sequence unless `force` (then objects of
    the dump replace existing ones: pg_restore --clean --if-exists).
    """
    started = time.perf_counter()
    say = echo or (lambda _text: None)
    manifest = read_manifest(directory)
    url = config.normalize_url(into)
    with _psycopg(url, autocommit=True) as conn:
        existing = int(db.one(conn.execute(_USER_OBJECTS))[0])
        database = db.one(conn.execute("SELECT current_database()"))[0]
    if existing and not force:
        raise BackupError(
            f"database {database} is not empty ({existing} tables, views or sequences); "
            "restore into an empty database, or pass --force to replace its objects"
        )
    engine = db.get_engine(url)
    pg_restore = db.pg_tool("pg_restore", engine)
    conninfo, env = _conninfo(url)
    args = [
        str(pg_restore),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        f"--jobs={max(1, jobs)}",
        f"--dbname={conninfo}",
    ]
    if force and existing:
        args[1:1] = ["--clean", "--if-exists"]
    say(f"restoring {directory} into {database} with {pg_restore.name} ...")
    restore_started = time.perf_counter()
    _run_tool([*args, str(directory / manifest["dump"]["file"])], env, "pg_restore")
    restore_seconds = time.perf_counter() - restore_started
    say("verifying counts and checksums ...")
    with _psycopg(url) as conn:
        comparison = compare(manifest, conn)
    with _psycopg(url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # pg_restore leaves the planner without statistics
    return RestoreResult(
        database=database,
        seconds=time.perf_counter() - started,
        restore_seconds=restore_seconds,
        comparison=comparison,
    )


def verify_backup(
    directory: Path,
    engine: Engine | None,
    *,
    echo: Callable[[str], None] | None = None,
) -> Comparison:
    """Check a backup without touching an existing database.

    Always: the manifest, the dump's sha256, and that `pg_restore --list` reads the dump and
    finds every table's data. With an engine: restore into a scratch database on that server,
    compare counts and checksums with the manifest, drop the scratch database.
    """
    say = echo or (lambda _text: None)
    manifest = read_manifest(directory)
    dump = directory / manifest["dump"]["file"]
    problems = []
    say("checking the dump's sha256 ...")
    if _sha256(dump) != manifest["dump"]["sha256"]:
        problems.append(f"{dump.name}: sha256 differs from the manifest (the file changed)")
        return Comparison(ok=False, problems=problems)
    pg_restore = db.pg_tool("pg_restore", engine) if engine is not None else _newest_pg_restore()
    listing = _run_tool(
        [str(pg_restore), "--list", str(dump)], dict(os.environ), "pg_restore --list"
    )
    for table in manifest["tables"]:
        if (
            f" TABLE DATA public {table} " not in listing.stdout
            and manifest["tables"][table]["rows"]
        ):
            problems.append(f"the dump has no data for table {table}")
    if problems or engine is None:
        return Comparison(
            ok=not problems,
            problems=problems,
            tables=len(manifest["tables"]),
            rows=sum(int(t["rows"]) for t in manifest["tables"].values()),
        )
    scratch = f"shareprice_verify_{secrets.token_hex(4)}"
    admin = config.normalize_url(engine.url)
    with _psycopg(admin, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        except psycopg.Error as exc:
            raise BackupError(
                f"cannot create a scratch database to test-restore into ({exc.diag.message_primary}); "
                "the sha256 and listing checks passed"
            ) from None
    try:
        result = restore_backup(directory, admin.set(database=scratch), echo=echo)
        comparison = result.comparison
    finally:
        db.forget_engine(admin.set(database=scratch))
        with _psycopg(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )
    return comparison


def _newest_pg_restore() -> Path:
    """Without a server to match: the newest pg_restore here (it reads older dumps too)."""
    from shutil import which

    candidates = [
        db.embedded_bin_dir() / "pg_restore",
        *Path("/usr/lib/postgresql").glob("*/bin/pg_restore"),
    ]
    found = which("pg_restore")
    if found:
        candidates.append(Path(found))
    existing = [c for c in candidates if c.exists()]
    if not existing:
        raise BackupError("no pg_restore found (install postgresql-client)")
    return max(existing, key=db.tool_major)
