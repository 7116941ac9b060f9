import pytest
from sqlalchemy.engine import make_url

from shareprice.store import config


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://alice:s3cr3t@db:5432/x", "postgresql://alice:***@db:5432/x"),
        (
            "postgresql+psycopg://bob:p%40ss@h/d?sslmode=require",
            "postgresql+psycopg://bob:***@h/d?sslmode=require",
        ),
        ("postgresql://h/d?user=u&password=hunter2", "postgresql://h/d?user=u&password=***"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/x",
            "postgresql://postgres:@/postgres?host=/tmp/x",
        ),
        ("postgresql://nopass@h/d", "postgresql://nopass@h/d"),
    ],
)
def test_mask_url_hides_passwords(url, expected):
    assert config.mask_url(url) == expected


def test_mask_url_accepts_sqlalchemy_url_objects():
    url = make_url("postgresql+psycopg://carol:topsecret@h:1/d")
    masked = config.mask_url(url)
    assert "topsecret" not in masked and "carol:***@h:1/d" in masked


def test_mask_secrets_in_free_text():
    text = 'connection to "postgresql://u:pw123@host/db" failed; password=pw123 wrong'
    assert "pw123" not in config.mask_secrets(text)


def test_plain_postgresql_urls_get_psycopg_driver():
    assert config.normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert config.normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"


def test_configured_url_prefers_shareprice_variable(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@h/generic")
    monkeypatch.setenv("SHAREPRICE_DATABASE_URL", "postgresql://a@h/specific")
    assert config.configured_url().endswith("/specific")
    monkeypatch.delenv("SHAREPRICE_DATABASE_URL")
    assert config.configured_url().endswith("/generic")


def test_default_data_dir_is_never_under_root_home(monkeypatch):
    monkeypatch.delenv("SHAREPRICE_DATA_DIR", raising=False)
    assert not str(config.data_dir()).startswith("/root")


def test_libpq_conninfo_keeps_spaces_in_options_and_the_password_exact():
    import psycopg.conninfo

    from shareprice.store import db

    conninfo = db.libpq_url("postgresql://u:p%20w+x@h:5/d?options=-c%20statement_timeout%3D5000")
    parsed = psycopg.conninfo.conninfo_to_dict(conninfo)
    assert parsed == {
        "host": "h",
        "port": "5",
        "user": "u",
        "password": "p w+x",
        "dbname": "d",
        "options": "-c statement_timeout=5000",
    }
