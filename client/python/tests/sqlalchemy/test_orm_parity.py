"""The ORM application (orm_app) runs unchanged on psycopg2 straight to
PostgreSQL and on postgresql+sessionbroker through the broker, and both see
the same results: the drop-in promise of issue 10."""

from __future__ import annotations

import datetime
import decimal

import pytest
from sqlalchemy.engine import Engine

import orm_app


@pytest.fixture(scope="module")
def psycopg2_record(psycopg2_engine: Engine):
    return orm_app.run_scenario(psycopg2_engine)


@pytest.fixture(scope="module")
def broker_record(module_broker_engine: Engine):
    return orm_app.run_scenario(module_broker_engine)


def test_the_app_sees_the_same_results_through_the_broker_as_on_psycopg2(
    psycopg2_record, broker_record
) -> None:
    assert broker_record.keys() == psycopg2_record.keys()
    for key in psycopg2_record:
        assert broker_record[key] == psycopg2_record[key], key


def test_commits_and_relationships_persist(broker_record) -> None:
    assert broker_record["catalogue"] == [
        ("Ada", [("Notes", decimal.Decimal("12.50")), ("Engines", decimal.Decimal("7.25"))]),
        ("Grace", [("Compilers", decimal.Decimal("30.00"))]),
    ]
    assert broker_record["totals"] == [("Ada", 2, decimal.Decimal("20.25")), ("Grace", 0, None)]


def test_a_rollback_undoes_flushed_writes(broker_record) -> None:
    assert broker_record["inside_rolled_back_tx"] == 3
    assert broker_record["count_after_rollback"] == 2
    assert broker_record["name_after_rollback"] == "Ada"


def test_a_unique_violation_is_an_integrity_error_with_its_constraint(broker_record) -> None:
    assert broker_record["unique_violation"] == {
        "sqlalchemy_class": "IntegrityError",
        "pgcode": "23505",
        "constraint": "orm_app_author_email_key",
        "table": "orm_app_author",
    }
    assert broker_record["authors_after_violation"] == ["Ada", "Grace", "Linus"]


def test_a_serialization_failure_is_retried_to_a_consistent_result(broker_record) -> None:
    assert broker_record["isolation_seen"] == "serializable"
    assert broker_record["serializable_attempts"] == 2
    assert broker_record["serializable_failures"] == [
        {"sqlalchemy_class": "OperationalError", "pgcode": "40001"}
    ]
    assert broker_record["bob_retry_went"] is False
    assert broker_record["doctors"] == [("alice", False), ("bob", True)]


def test_column_types_round_trip_as_native_python_values(broker_record) -> None:
    assert broker_record["round_trip"][0] == orm_app.SAMPLE
    assert all(
        value is None for key, value in broker_record["round_trip"][1].items() if key != "id"
    )
    types = broker_record["round_trip_types"]
    assert types["big"] == "Decimal" and types["ident"] == "UUID" and types["ident_text"] == "str"
    assert types["doc"] == "dict" and types["grid"] == "list" and types["span"] == "timedelta"
    assert broker_record["round_trip"][0]["stamp"].utcoffset() == datetime.timedelta(0)
    assert broker_record["filters"] == [1] * 7
