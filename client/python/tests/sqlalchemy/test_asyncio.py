"""postgresql+sessionbroker_async: SQLAlchemy's asyncio extension
(create_async_engine, AsyncSession) over sessionbroker.aio, against a live
broker: Core and ORM, commit and rollback, errors, isolation, pre-ping."""

from __future__ import annotations

import asyncio
import decimal

import pytest
from sqlalchemy import Column, Integer, Numeric, String, exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import declarative_base

from sessionbroker.sqlalchemy.asyncio import AsyncSessionBrokerDialect

Base = declarative_base()


class Item(Base):
    __tablename__ = "sa_async_item"

    id = Column(Integer, primary_key=True)
    name = Column(String(50), nullable=False, unique=True)
    price = Column(Numeric(8, 2))


@pytest.fixture
def async_url(broker_target: str) -> str:
    return "postgresql+sessionbroker_async://%s/?client_id=pytest-async" % broker_target


def test_the_async_dialect_is_registered(async_url: str) -> None:
    async def main():
        engine = create_async_engine(async_url)
        try:
            return engine.dialect
        finally:
            await engine.dispose()

    dialect = asyncio.run(main())
    assert isinstance(dialect, AsyncSessionBrokerDialect) and dialect.is_async


def test_an_orm_app_runs_on_asyncio(async_url: str) -> None:
    async def main():
        engine = create_async_engine(async_url, pool_pre_ping=True)
        seen = {}
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine) as session:
                session.add_all([Item(name="a", price=decimal.Decimal("1.50")), Item(name="b")])
                await session.commit()
            async with AsyncSession(engine) as session:
                session.add(Item(name="c"))
                await session.flush()
                await session.rollback()
                seen["count_after_rollback"] = await session.scalar(select(func.count(Item.id)))
                session.add(Item(name="a"))
                with pytest.raises(exc.IntegrityError) as info:
                    await session.commit()
                seen["pgcode"] = info.value.orig.pgcode
                await session.rollback()
                seen["items"] = (
                    await session.execute(select(Item.name, Item.price).order_by(Item.name))
                ).all()
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="SERIALIZABLE")
                seen["isolation"] = (
                    await conn.execute(text("show transaction isolation level"))
                ).scalar()
                seen["typed"] = (await conn.execute(select(func.abs(-41) + 1))).scalar()
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
            await engine.dispose()
        return seen

    seen = asyncio.run(main())
    assert seen == {
        "count_after_rollback": 2,
        "pgcode": "23505",
        "items": [("a", decimal.Decimal("1.50")), ("b", None)],
        "isolation": "serializable",
        "typed": 42,
    }
