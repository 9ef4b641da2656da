"""listen(): LISTEN/NOTIFY through the broker's Listen stream, blocking and
asyncio, against the live broker of conftest.py."""

import asyncio
import threading

import pytest

from sessionbroker import aio, dbapi


def notify(target: str, channel: str, payload: str) -> None:
    """Sends a NOTIFY through the broker (Execute, autocommit)."""
    conn = dbapi.connect(target, autocommit=True)
    try:
        conn.cursor().execute("SELECT pg_notify(%s, %s)", (channel, payload))
    finally:
        conn.close()


def test_listen_yields_notifications_with_the_sender_pid(broker_target):
    with dbapi.listen(broker_target, ["py_orders", "Py Mixed"], client_id="pytest-listen") as events:
        assert events.channels == ("py_orders", "Py Mixed")
        assert events.listener_pid > 0
        notify(broker_target, "py_orders", "first")
        notify(broker_target, "Py Mixed", "second")
        got = [next(events), next(events)]
    assert [(e.channel, e.payload) for e in got] == [("py_orders", "first"),
                                                      ("Py Mixed", "second")]
    assert all(isinstance(e, dbapi.Notification) and e.sender_pid > 0 for e in got)


def test_close_from_another_thread_ends_the_iteration(broker_target):
    events = dbapi.listen(broker_target, "py_closing")
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(events))
    reader.start()
    events.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen == []


def test_bad_channels_raise_the_dbapi_error(broker_target):
    with pytest.raises(dbapi.ProgrammingError) as info:
        dbapi.listen(broker_target, ["x" * 64])
    assert "at most 63 bytes" in str(info.value)


def test_aio_listen_is_an_async_iterator(broker_target):
    async def main():
        listener = await aio.listen(broker_target, ["py_async"], client_id="pytest-aio-listen")
        async with listener:
            assert listener.listener_pid > 0
            await asyncio.get_running_loop().run_in_executor(
                None, notify, broker_target, "py_async", "hello")
            async for event in listener:
                assert isinstance(event, aio.Notification)
                return event.channel, event.payload

    assert asyncio.run(main()) == ("py_async", "hello")
