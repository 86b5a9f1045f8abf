"""`meo.database` checked when the configuration is loaded
(mecorch.kernel.pgstore.settings): errors name the field and never show
a password."""

from __future__ import annotations

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.pgstore import settings


def test_a_good_database_section():
    s = settings({"dsn": "postgresql://mecorch@127.0.0.1:5433/meo?application_name=m",
                  "password_file": "/etc/mecorch/db.password"})
    assert s.params == {"user": "mecorch", "host": "127.0.0.1", "port": "5433",
                        "dbname": "meo", "application_name": "m"}
    assert s.shown == "mecorch@127.0.0.1:5433/meo"
    assert s.password_file == "/etc/mecorch/db.password"
    remote = settings({"dsn": "postgresql://m@db1.example,db2.example/meo",
                       "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"})
    assert remote.params["sslmode"] == "verify-full"
    assert remote.params["sslrootcert"] == "/etc/ca.pem"


@pytest.mark.parametrize("section, error", [
    ({"dsn": "postgresql://mecorch:s3cret@127.0.0.1/meo"}, r"meo.database.dsn holds a password.*"
     r"meo.database.password_file"),
    ({"dsn": "postgresql://mecorch@127.0.0.1/meo?password=s3cret"}, "holds a password"),
    ({"dsn": "host=127.0.0.1 user=m dbname=d"}, r"meo.database.dsn must be a postgresql://"),
    ({"dsn": "postgresql://127.0.0.1/meo"}, "must name the user"),
    ({"dsn": "postgresql://m@127.0.0.1"}, "must name the dbname"),
    ({"dsn": "postgresql://m@127.0.0.1/d?sslmode=disable"},
     r"parameter 'sslmode' is not taken here.*set meo.database.sslmode"),
    ({"dsn": "postgresql://m@127.0.0.1/d?options=-csearch_path%3Dx"}, "'options' is not taken"),
    ({"dsn": "postgresql://m@db1.example/d"}, r"sslmode must be verify-ca or verify-full "
     r"for 'db1.example'"),
    ({"dsn": "postgresql://m@127.0.0.1,10.0.0.9/d", "sslmode": "require"},
     "verify-ca or verify-full for '10.0.0.9'"),
    ({"dsn": "postgresql://m@127.0.0.1/d", "password_file": "db.password"},
     "meo.database.password_file must be an absolute path"),
    ({"dsn": "postgresql://m@127.0.0.1:notaport/d"}, "port 'notaport' is not a port number"),
    ({"dsn": "postgresql://m@127.0.0.1/d?x=%zz"}, "not a PostgreSQL URI libpq can read"),
])
def test_refused_naming_the_field(section, error):
    with pytest.raises(InvalidInput, match=error) as e:
        settings(section)
    assert "s3cret" not in e.value.detail


def test_loopback_and_sockets_need_no_tls():
    for dsn in ("postgresql://m@localhost/d", "postgresql://m@[::1]:5432/d",
                "postgresql://m@/d?host=/run/postgresql", "postgresql://m@/d"):
        assert settings({"dsn": dsn}).params["dbname"] == "d"


def test_the_config_file_is_checked_at_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("meo: {database: {dsn: 'postgresql://m:pw@127.0.0.1/d'}}\n")
    with pytest.raises(InvalidInput, match=rf"config {f}: meo.database.dsn holds a password"):
        config.load(f)
    f.write_text("meo: {database: {password_file: /x}}\n")
    with pytest.raises(InvalidInput, match="meo.database needs 'dsn'"):
        config.load(f)
    f.write_text("meo: {database: {dsn: 'postgresql://m@127.0.0.1/d', sslmod: require}}\n")
    with pytest.raises(InvalidInput, match="did you mean 'sslmode'"):
        config.load(f)
    f.write_text("meo: {database: {dsn: 'postgresql://m@127.0.0.1/d', sslmode: verify}}\n")
    with pytest.raises(InvalidInput, match="sslmode must be one of"):
        config.load(f)
    f.write_text("meo: {database: {dsn: 'postgresql://m@127.0.0.1/d'}}\n")
    assert config.load(f)["meo"]["database"] == {"dsn": "postgresql://m@127.0.0.1/d"}
    assert "database" not in config.load()["meo"]          # the default: SQLite
