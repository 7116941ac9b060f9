"""`shareprice import`: streaming, idempotent by content, invalid documents never written."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parser_errors import CORPUS, _dump, _flat

from shareprice.ingest import importer
from shareprice.ingest.importer import _ArrayReader, import_paths


def _epochs(engine) -> dict[int, dict]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT epoch, data::text FROM epochs ORDER BY epoch").all()
    return {epoch: orjson.loads(text) for epoch, text in rows}


def _write_lines(path, docs) -> None:
    path.write_bytes(b"\n".join(d if isinstance(d, bytes) else orjson.dumps(d) for d in docs))


def test_flat_sample_twice_inserts_220_then_0(engine, shared_data):
    path = shared_data / "flat-export-220-epochs.json"
    in_file = orjson.loads(path.read_bytes())
    distinct = {doc["epoch"] for doc in in_file}
    assert len(in_file) == 220 and len(distinct) == 220  # this sample holds no epoch twice

    first = import_paths(engine, [path])
    assert (first.read, first.inserted, first.identical, first.invalid) == (220, 220, 0, [])
    second = import_paths(engine, [path])
    assert (second.read, second.inserted, second.identical) == (220, 0, 220)
    assert second.conflicting == [] and second.ok
    stored = _epochs(engine)
    assert sorted(stored) == sorted(distinct)
    assert stored[218] == next(d for d in in_file if d["epoch"] == 218)


def test_storage_dump_sample_is_stored_as_the_document_not_the_list(engine, shared_data):
    path = shared_data / "storage-dump-epoch-2647.json"
    summary = import_paths(engine, [path])
    assert (summary.read, summary.inserted) == (1, 1)
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT end_block, end_hash, indexed_at, data::text FROM epochs WHERE epoch = 2647"
        ).one()
    assert row[0] == 4169635
    assert row[1].startswith("0x2c24289c")
    assert int(row[2].timestamp() * 1000) == 1757034855847
    assert orjson.loads(row[3]) == orjson.loads(path.read_bytes())[0]


def test_same_content_in_another_key_order_and_spacing_is_identical(engine, tmp_path):
    doc = _flat(epoch=40)
    (tmp_path / "a.json").write_bytes(orjson.dumps([doc]))
    reordered = json.dumps(dict(reversed(list(doc.items()))), indent=3)
    (tmp_path / "b.json").write_text(reordered)
    first = import_paths(engine, [tmp_path / "a.json"])
    second = import_paths(engine, [tmp_path / "b.json"])
    assert (first.inserted, second.inserted, second.identical) == (1, 0, 1)


def test_a_different_document_is_a_conflict_unless_replace(engine, tmp_path):
    original, changed = _flat(epoch=5), _flat(epoch=5, totalStake="301")
    _write_lines(tmp_path / "one.ndjson", [original])
    _write_lines(tmp_path / "two.ndjson", [changed])
    import_paths(engine, [tmp_path / "one.ndjson"])
    with engine.connect() as conn:
        revision = conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one()

    kept = import_paths(engine, [tmp_path / "two.ndjson"])
    assert (kept.inserted, kept.identical, kept.conflicting, kept.ok) == (0, 0, [5], False)
    assert _epochs(engine)[5] == original  # nothing already stored is lost

    replaced = import_paths(engine, [tmp_path / "two.ndjson"], replace=True)
    assert (replaced.replaced, replaced.conflicting) == ([5], [])
    assert _epochs(engine)[5] == changed
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT revision FROM epochs").scalar_one() > revision


def test_the_same_epoch_twice_in_one_input_is_counted_honestly(engine, tmp_path):
    twice = tmp_path / "twice.json"
    twice.write_bytes(orjson.dumps([_flat(epoch=1), _flat(epoch=2), _flat(epoch=1)]))
    summary = import_paths(engine, [twice])
    assert (summary.read, summary.inserted, summary.identical) == (3, 2, 1)

    differing = tmp_path / "differing.json"
    differing.write_bytes(orjson.dumps([_flat(epoch=3), _flat(epoch=3, totalStake="1")]))
    summary = import_paths(engine, [differing])
    assert (summary.inserted, summary.conflicting) == (1, [3])
    assert _epochs(engine)[3]["totalStake"] == "300"  # the first one is kept


def test_broken_documents_are_reported_and_never_written(engine, tmp_path):
    good = [_flat(epoch=100), _dump(epoch=101)]
    broken = [doc for doc, _ in CORPUS.values()]
    lines = [good[0], *broken, good[1]]
    path = tmp_path / "mixed.ndjson"
    _write_lines(path, [d if isinstance(d, bytes) else orjson.dumps(d) for d in lines])
    summary = import_paths(engine, [path])
    assert summary.read == len(lines)
    assert summary.inserted == 2
    assert len(summary.invalid) == len(broken)
    sources = [source for source, _ in summary.invalid]
    assert sources == [f"{path}:line {n}" for n in range(2, len(lines))]
    reasons = dict(summary.invalid)
    assert reasons[f"{path}:line 2"] == (
        "epoch 7, operators.entries[1]: bad hex '0xzz' in currentTotalStake"
    )
    assert all(reason for reason in reasons.values())
    assert sorted(_epochs(engine)) == [100, 101]


def test_a_truncated_array_keeps_what_came_before_and_says_where_it_broke(engine, tmp_path):
    data = orjson.dumps([_flat(epoch=7), _flat(epoch=8), _flat(epoch=9)])
    path = tmp_path / "cut.json"
    path.write_bytes(data[:-30])
    summary = import_paths(engine, [path])
    assert summary.inserted == 2
    ((source, reason),) = summary.invalid
    assert source == f"{path}[2]"
    assert "invalid JSON at byte" in reason and "rest of file skipped" in reason
    assert sorted(_epochs(engine)) == [7, 8]


def test_postgresql_rejecting_one_document_does_not_lose_the_batch(engine, tmp_path):
    bad = _flat(epoch=21, endHash="nul \u0000 here")  # jsonb cannot hold \u0000
    path = tmp_path / "nul.json"
    path.write_bytes(orjson.dumps([_flat(epoch=20), bad, _flat(epoch=22)]))
    summary = import_paths(engine, [path])
    assert summary.inserted == 2
    ((source, reason),) = summary.invalid
    assert source == f"{path}[1]" and "epoch 21: rejected by PostgreSQL" in reason
    assert sorted(_epochs(engine)) == [20, 22]


def test_directories_and_mixed_formats(engine, tmp_path, shared_data):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dump.json").write_bytes(
        (shared_data / "storage-dump-epoch-2647.json").read_bytes()
    )
    _write_lines(tmp_path / "more.jsonl", [_flat(epoch=300), _dump(epoch=301)])
    (tmp_path / "single.json").write_bytes(
        orjson.dumps(_dump(epoch=302), option=orjson.OPT_INDENT_2)
    )
    (tmp_path / "notes.txt").write_text("not a data file")
    summary = import_paths(engine, [tmp_path])
    assert (summary.files, summary.inserted, summary.invalid) == (3, 4, [])
    assert sorted(_epochs(engine)) == [300, 301, 302, 2647]


def test_large_arrays_stream_in_chunks(tmp_path, monkeypatch):
    docs = [_dump(epoch=e) for e in range(40)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(docs, indent=1))
    monkeypatch.setattr(importer, "_CHUNK", 1000)  # far smaller than one document
    items = list(importer.iter_documents_in_file(path))
    assert [source for source, _ in items] == [f"{path}[{i}]" for i in range(40)]
    assert [orjson.loads(raw) for _, raw in items] == docs


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(alphabet='ab",]}[{\\ \n\t'),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='k"]}\\'), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=6), st.integers(1, 17), st.booleans())
def test_array_reader_splits_any_json_array(elements, chunk_size, pretty):
    data = json.dumps(elements, indent=2 if pretty else None).encode()
    split = list(_ArrayReader(io.BytesIO(data), chunk_size=chunk_size).elements())
    assert [json.loads(raw) for raw in split] == elements


def test_cli_import_prints_a_summary_and_fails_on_invalid(db_url, tmp_path, shared_data):
    path = tmp_path / "mixed.ndjson"
    _write_lines(path, [_flat(epoch=5000), b'{"epoch": 2, "operatorStakes": {"0": "-1"}}'])
    run = [sys.executable, "-m", "shareprice", "import", str(path), str(shared_data)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "read 223 documents from 3 file(s): 222 inserted, 0 identical skipped" in result.stdout
    assert (
        f"invalid: {path}:line 2: epoch 2, operatorStakes['0']: bad decimal '-1'" in result.stdout
    )
    again = subprocess.run(
        [*run[:3], "import", "--json", str(shared_data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["inserted"], summary["identical_skipped"], summary["invalid"]) == (0, 221, 0)
