"""A small ORM application, written as any SQLAlchemy 1.4 app would be.

It knows nothing of the broker: it is handed an Engine and runs a fixed
scenario (schema creation, related objects, commits, a rollback, a unique
violation caught as IntegrityError, a SERIALIZABLE write-skew retried after a
serialization failure, and a round trip of the common column types). It
returns what it observed as plain data, so that a test can run it once on
psycopg2 directly against PostgreSQL and once through the broker and compare
the two records. Not thread-safe (one scenario at a time per database).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Any, Callable, Dict, List, Tuple

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, declarative_base, relationship, selectinload

Base = declarative_base()


class Mood(enum.Enum):
    """A PostgreSQL ENUM type."""

    happy = "happy"
    sad = "sad"


class Author(Base):
    __tablename__ = "orm_app_author"
    __table_args__ = (UniqueConstraint("email", name="orm_app_author_email_key"),)

    id = Column(Integer, primary_key=True)
    name = Column(String(100), nullable=False)
    email = Column(String(200), nullable=False)
    books = relationship(
        "Book", back_populates="author", order_by="Book.id", cascade="all, delete-orphan"
    )


class Book(Base):
    __tablename__ = "orm_app_book"

    id = Column(Integer, primary_key=True)
    title = Column(Text, nullable=False)
    price = Column(Numeric(10, 2), nullable=False)
    author_id = Column(ForeignKey("orm_app_author.id"), nullable=False)
    author = relationship("Author", back_populates="books")


class Doctor(Base):
    """The classic write-skew example: at least one doctor must stay on call."""

    __tablename__ = "orm_app_doctor"

    name = Column(String(50), primary_key=True)
    on_call = Column(Boolean, nullable=False)


class Sample(Base):
    """One column of each common type, for the round trip."""

    __tablename__ = "orm_app_sample"

    id = Column(Integer, primary_key=True)
    big = Column(Numeric(30, 10))
    stamp = Column(DateTime(timezone=True))
    naive = Column(DateTime)
    day = Column(Date)
    clock = Column(Time)
    span = Column(Interval)
    doc = Column(JSON)
    docb = Column(JSONB)
    ident = Column(UUID(as_uuid=True))
    ident_text = Column(UUID(as_uuid=False))
    tags = Column(ARRAY(Text))
    grid = Column(ARRAY(Integer, dimensions=2))
    blob = Column(LargeBinary)
    mood = Column(Enum(Mood, name="orm_app_mood"))
    flag = Column(Boolean)


SAMPLE = dict(
    id=1,
    big=decimal.Decimal("12345678901234567890.0123456789"),
    stamp=datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc),
    naive=datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    day=datetime.date(1999, 12, 31),
    clock=datetime.time(7, 8, 9, 123456),
    span=datetime.timedelta(days=3, hours=4, minutes=5, seconds=6),
    doc={"a": [1, 2.5, None, True], "b": {"c": "d"}},
    docb={"z": 1, "a": "é"},
    ident=uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ident_text="b1ffcd00-ad1c-4ef8-bb6d-6bb9bd380a22",
    tags=["x", "y, z", 'q"uote', None],
    grid=[[1, 2], [3, 4]],
    blob=bytes(range(256)),
    mood=Mood.sad,
    flag=False,
)


def _record_error(err: DBAPIError) -> Dict[str, Any]:
    """What a DB-API error says, in the fields psycopg2 and sessionbroker share."""
    orig = err.orig
    diag = orig.diag
    return {
        "sqlalchemy_class": type(err).__name__,
        "pgcode": orig.pgcode,
        "constraint": diag.constraint_name,
        "table": diag.table_name,
    }


def run_scenario(engine: Engine) -> Dict[str, Any]:
    """Runs the application against `engine`; returns what it saw."""
    record: Dict[str, Any] = {}
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    try:
        _authors_and_books(engine, record)
        _rollback(engine, record)
        _unique_violation(engine, record)
        _serializable_retry(engine, record)
        _round_trip(engine, record)
    finally:
        Base.metadata.drop_all(engine)
    return record


def _authors_and_books(engine: Engine, record: Dict[str, Any]) -> None:
    with Session(engine) as session:
        ada = Author(name="Ada", email="ada@example.com")
        ada.books = [
            Book(title="Notes", price=decimal.Decimal("12.50")),
            Book(title="Engines", price=decimal.Decimal("7.25")),
        ]
        grace = Author(name="Grace", email="grace@example.com")
        grace.books = [Book(title="Compilers", price=decimal.Decimal("30.00"))]
        session.add_all([ada, grace])
        session.commit()
        record["ids"] = sorted(a.id for a in (ada, grace))

    with Session(engine) as session:
        authors = session.scalars(
            select(Author).options(selectinload(Author.books)).order_by(Author.name)
        ).all()
        record["catalogue"] = [
            (a.name, [(b.title, b.price) for b in a.books]) for a in authors
        ]
        # Update through the relationship, then a second commit.
        authors[0].books[0].price += decimal.Decimal("0.50")
        session.delete(authors[1].books[0])
        session.commit()

    with Session(engine) as session:
        record["after_update"] = session.execute(
            select(Book.title, Book.price, Author.name)
            .join(Book.author)
            .order_by(Book.title)
        ).all()
        record["totals"] = session.execute(
            select(Author.name, func.count(Book.id), func.sum(Book.price))
            .outerjoin(Author.books)
            .group_by(Author.name)
            .order_by(Author.name)
        ).all()


def _rollback(engine: Engine, record: Dict[str, Any]) -> None:
    with Session(engine) as session:
        ada = session.scalars(select(Author).where(Author.name == "Ada")).one()
        ada.name = "Ada Lovelace"
        session.add(Author(name="Temp", email="temp@example.com"))
        session.flush()  # the writes reach the database, inside the transaction
        record["inside_rolled_back_tx"] = session.scalar(select(func.count(Author.id)))
        session.rollback()
        record["name_after_rollback"] = ada.name  # expired, reloaded
        record["count_after_rollback"] = session.scalar(select(func.count(Author.id)))


def _unique_violation(engine: Engine, record: Dict[str, Any]) -> None:
    with Session(engine) as session:
        session.add(Author(name="Impostor", email="ada@example.com"))
        try:
            session.commit()
        except IntegrityError as err:
            record["unique_violation"] = _record_error(err)
            session.rollback()
        # The session is usable again after the rollback.
        session.add(Author(name="Linus", email="linus@example.com"))
        session.commit()
        record["authors_after_violation"] = session.scalars(
            select(Author.name).order_by(Author.name)
        ).all()


def _is_serialization_failure(err: DBAPIError) -> bool:
    return getattr(err.orig, "pgcode", None) == "40001"


def _with_retry(
    engine: Engine, work: Callable[[Session, int], None], attempts: int = 5
) -> Tuple[int, List[Dict[str, Any]]]:
    """Runs `work` in a SERIALIZABLE transaction, retrying serialization
    failures; returns the number of attempts and the failures seen."""
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    failures: List[Dict[str, Any]] = []
    for attempt in range(1, attempts + 1):
        with Session(serializable) as session:
            try:
                work(session, attempt)
                session.commit()
                return attempt, failures
            except DBAPIError as err:
                session.rollback()
                if not _is_serialization_failure(err):
                    raise
                failures.append(
                    {"sqlalchemy_class": type(err).__name__, "pgcode": err.orig.pgcode}
                )
    raise AssertionError("no attempt of %d succeeded" % attempts)


def _serializable_retry(engine: Engine, record: Dict[str, Any]) -> None:
    with Session(engine) as session:
        session.add_all([Doctor(name="alice", on_call=True), Doctor(name="bob", on_call=True)])
        session.commit()

    def go_off_call(session: Session, name: str) -> bool:
        on_call = session.scalar(select(func.count()).where(Doctor.on_call))
        if on_call < 2:
            return False
        session.get(Doctor, name).on_call = False
        session.flush()
        return True

    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    record["isolation_seen"] = None

    def bob_work(session: Session, attempt: int) -> None:
        record["isolation_seen"] = session.connection().exec_driver_sql(
            "show transaction isolation level"
        ).scalar()
        if attempt == 1:
            # Alice decides at the same time, in her own SERIALIZABLE
            # transaction, and commits first: write skew, which
            # SERIALIZABLE turns into a serialization failure for Bob.
            went = go_off_call(session, "bob")
            with Session(serializable) as alice:
                assert go_off_call(alice, "alice")
                alice.commit()
            record["bob_first_attempt_went"] = went
        else:
            record["bob_retry_went"] = go_off_call(session, "bob")

    attempts, failures = _with_retry(engine, bob_work)
    record["serializable_attempts"] = attempts
    record["serializable_failures"] = failures
    with Session(engine) as session:
        record["doctors"] = session.execute(
            select(Doctor.name, Doctor.on_call).order_by(Doctor.name)
        ).all()


def _round_trip(engine: Engine, record: Dict[str, Any]) -> None:
    with Session(engine) as session:
        session.add(Sample(**SAMPLE))
        session.add(Sample(id=2))  # all NULL
        session.commit()
    with Session(engine) as session:
        rows = session.scalars(select(Sample).order_by(Sample.id)).all()
        record["round_trip"] = [
            {key: getattr(row, key) for key in SAMPLE} for row in rows
        ]
        record["round_trip_types"] = {
            key: type(getattr(rows[0], key)).__name__ for key in SAMPLE
        }
        # Filters with typed parameters of each kind.
        record["filters"] = [
            session.scalar(select(func.count()).where(Sample.big == SAMPLE["big"])),
            session.scalar(select(func.count()).where(Sample.stamp == SAMPLE["stamp"])),
            session.scalar(select(func.count()).where(Sample.ident == SAMPLE["ident"])),
            session.scalar(select(func.count()).where(Sample.tags == SAMPLE["tags"])),
            session.scalar(select(func.count()).where(Sample.docb["z"].as_integer() == 1)),
            session.scalar(select(func.count()).where(Sample.mood == Mood.sad)),
            session.scalar(select(func.count()).where(Sample.span > datetime.timedelta(days=1))),
        ]
