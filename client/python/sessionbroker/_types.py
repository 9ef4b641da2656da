"""Python values <-> the broker's ``Value`` messages, and PEP 249's type objects.

Parameters (``to_value``), typed as psycopg2's literals are: None, bool, int
(int4 when it fits, else int8, else numeric), float, Decimal, str (untyped:
PostgreSQL infers it from the context, as for a quoted literal), bytes /
bytearray / memoryview, date, time, datetime (with or without tzinfo),
timedelta, UUID, dict (json), ``Json(x)`` (any JSON document, explicitly),
lists and tuples (arrays, nested for multi-dimensional). Types a ``Value``
case cannot carry go as text with ``Value.type`` naming the PostgreSQL type
("date", "timestamptz", "interval", "uuid", and "date[]"-style array types).
Anything else is a DataError.

Results (``from_value``): decoded by the column's type name (``Column.type_name``),
never guessed from the text: numeric -> Decimal, date/time/timestamp(tz) ->
datetime objects ('infinity'/'-infinity' -> the type's max/min, as psycopg2
does), interval -> timedelta (a year counts 365 days and a month 30, psycopg2's
rule), uuid -> UUID,
json/jsonb -> parsed, bytea -> bytes, arrays -> (nested) lists, unknown types
-> str.

Pure functions and immutable objects: thread-safe.
"""

import datetime as _dt
import decimal
import json
import re
import time as _time
import uuid
from typing import Any, Callable, Dict, Optional

from sessionbroker._errors import DataError
from sessionbroker._pb import broker_pb2

__all__ = [
    "Json", "Binary", "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks",
    "TimestampFromTicks", "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "to_value",
    "from_value", "DBAPITypeObject",
]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class Json:
    """A parameter sent as json(b): ``Json([1, 2])`` is a JSON array, where a
    bare list would be a PostgreSQL array. dicts need no wrapper."""

    __slots__ = ("adapted", "dumps")

    def __init__(self, adapted: Any, dumps: Optional[Callable[[Any], str]] = None) -> None:
        self.adapted = adapted
        self.dumps = dumps or json.dumps

    def __repr__(self) -> str:
        return f"Json({self.adapted!r})"


# ---- PEP 249 constructors and type objects ---------------------------------

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:  # noqa: N802 - PEP 249's name
    """The local date of a POSIX timestamp (PEP 249)."""
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:  # noqa: N802
    """The local time of day of a POSIX timestamp (PEP 249)."""
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # noqa: N802
    """The local date and time of a POSIX timestamp (PEP 249)."""
    return Timestamp(*_time.localtime(ticks)[:6])


class DBAPITypeObject:
    """Compares equal to each type OID (``Cursor.description[i][1]``) it covers."""

    def __init__(self, name: str, *oids: int) -> None:
        self.name = name
        self.values = frozenset(oids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self.values == other.values
        return other in self.values

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"<DBAPITypeObject {self.name}>"


# text, varchar, bpchar, name, "char", unknown
STRING = DBAPITypeObject("STRING", 25, 1043, 1042, 19, 18, 705)
BINARY = DBAPITypeObject("BINARY", 17)
NUMBER = DBAPITypeObject("NUMBER", 20, 21, 23, 26, 700, 701, 1700)
DATETIME = DBAPITypeObject("DATETIME", 1082, 1083, 1266, 1114, 1184, 1186)
ROWID = DBAPITypeObject("ROWID", 26)


# ---- parameters: Python -> Value -------------------------------------------

def _text(s: str, what: str = "a string") -> str:
    if "\x00" in s:
        raise DataError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    return s


def _interval_text(td: _dt.timedelta) -> str:
    return f"{td.days} days {td.seconds} seconds {td.microseconds} microseconds"


def _fill(v: "broker_pb2.Value", x: Any) -> Optional[str]:
    """Sets v from x; returns the PostgreSQL type to name, or None for the case's own."""
    if x is None:
        v.null_value = 0
    elif isinstance(x, bool):
        v.bool_value = x
    elif isinstance(x, int):
        # Typed as PostgreSQL types an integer literal, as psycopg2 sends
        # them: int4 when it fits (so `substr(s, %s)` and other int4-only
        # functions resolve), else int8, else numeric.
        if _INT32_MIN <= x <= _INT32_MAX:
            v.int64_value = x
            return "int4"
        if _INT64_MIN <= x <= _INT64_MAX:
            v.int64_value = x
        else:
            v.numeric_value = str(x)
    elif isinstance(x, float):
        v.double_value = x
    elif isinstance(x, decimal.Decimal):
        if x.is_snan():
            raise DataError("a signaling NaN Decimal cannot be sent to PostgreSQL")
        v.numeric_value = "NaN" if x.is_nan() else str(x)
    elif isinstance(x, str):
        v.string_value = _text(x)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        v.bytes_value = bytes(x)
    elif isinstance(x, _dt.datetime):
        v.string_value = x.isoformat(sep=" ")
        return "timestamptz" if x.utcoffset() is not None else "timestamp"
    elif isinstance(x, _dt.date):
        v.string_value = x.isoformat()
        return "date"
    elif isinstance(x, _dt.time):
        v.string_value = x.isoformat()
        return "timetz" if x.utcoffset() is not None else "time"
    elif isinstance(x, _dt.timedelta):
        v.string_value = _interval_text(x)
        return "interval"
    elif isinstance(x, uuid.UUID):
        v.string_value = str(x)
        return "uuid"
    elif isinstance(x, Json):
        v.json_value = _text(_dumps(x.dumps, x.adapted), "a JSON document")
    elif isinstance(x, dict):
        v.json_value = _text(_dumps(json.dumps, x), "a JSON document")
    elif isinstance(x, (list, tuple)):
        types = set()
        for element in x:
            t = _fill(v.array_value.values.add(), element)
            if element is not None and not isinstance(element, (list, tuple)):
                types.add(t)
            elif isinstance(element, (list, tuple)) and t is not None:
                types.add(t[:-2])  # the element array's base type
        if not x:
            v.array_value.SetInParent()  # an empty array, not an unset case
        if len(types) == 1 and None not in types:
            return types.pop() + "[]"
        return None
    else:
        raise DataError(f"cannot send a {type(x).__module__}.{type(x).__qualname__} as a "
                        "PostgreSQL parameter (supported: None, bool, int, float, Decimal, str, "
                        "bytes, date, time, datetime, timedelta, UUID, dict, Json, list)")
    return None


def _dumps(dumps: Callable[[Any], str], x: Any) -> str:
    try:
        return dumps(x)
    except (TypeError, ValueError) as e:
        raise DataError(f"cannot encode the parameter as JSON: {e}") from e


def to_value(x: Any) -> "broker_pb2.Value":
    """One parameter as a Value, with ``type`` set where its case does not say it."""
    v = broker_pb2.Value()
    t = _fill(v, x)
    if t:
        v.type = t
    return v


# ---- results: Value -> Python ----------------------------------------------

_UTC = _dt.timezone.utc
_INTERVAL = re.compile(
    r"^(-)?P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?$")


def _bc_guard(text: str, type_name: str) -> None:
    if text.endswith(" BC"):
        raise DataError(f"{type_name} {text!r} is before year 1, which Python cannot represent")


def _date(text: str) -> _dt.date:
    if text == "infinity":
        return _dt.date.max
    if text == "-infinity":
        return _dt.date.min
    _bc_guard(text, "date")
    return _dt.date.fromisoformat(text)


def _timestamp(text: str) -> _dt.datetime:
    if text == "infinity":
        return _dt.datetime.max
    if text == "-infinity":
        return _dt.datetime.min
    _bc_guard(text, "timestamp")
    return _dt.datetime.fromisoformat(text)


def _timestamptz(text: str) -> _dt.datetime:
    if text == "infinity":
        return _dt.datetime.max.replace(tzinfo=_UTC)
    if text == "-infinity":
        return _dt.datetime.min.replace(tzinfo=_UTC)
    _bc_guard(text, "timestamptz")
    return _dt.datetime.fromisoformat(text)


def _time_of_day(text: str) -> _dt.time:
    if text.startswith("24:00:00"):
        raise DataError(f"time {text!r} (end of day) cannot be represented by datetime.time")
    return _dt.time.fromisoformat(text)


def _interval(text: str) -> _dt.timedelta:
    """PostgreSQL's iso_8601 interval output (the broker's IntervalStyle)."""
    m = _INTERVAL.match(text)
    if not m:
        raise DataError(f"cannot read the interval {text!r} (expected ISO 8601, "
                        "IntervalStyle iso_8601)")
    neg, years, months, weeks, days, hours, minutes, seconds = m.groups()
    # psycopg2's rule: a year is 365 days, a month 30 days.
    total_days = int(years or 0) * 365 + int(months or 0) * 30 + int(weeks or 0) * 7 + int(
        days or 0)
    secs = micros = 0
    if seconds:
        sign = -1 if seconds.startswith("-") else 1
        whole, _, frac = seconds.lstrip("-").partition(".")
        secs, micros = sign * int(whole), sign * int((frac + "000000")[:6])
    td = _dt.timedelta(days=total_days, hours=int(hours or 0), minutes=int(minutes or 0),
                       seconds=secs, microseconds=micros)
    return -td if neg else td


def _json(text: str) -> Any:
    return json.loads(text)


_TEXT_DECODERS: Dict[str, Callable[[str], Any]] = {
    "date": _date,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "time": _time_of_day,
    "timetz": _time_of_day,
    "interval": _interval,
    "uuid": uuid.UUID,
    # json and jsonb normally come as json_value; text here only if a
    # future broker sends them so.
    "json": _json,
    "jsonb": _json,
}


def from_value(v: "broker_pb2.Value", type_name: str) -> Any:
    """A result cell as Python, decoded by its column's PostgreSQL type name."""
    case = v.WhichOneof("kind")
    if case is None or case == "null_value":
        return None
    if case == "int64_value":
        return v.int64_value
    if case == "string_value":
        decode = _TEXT_DECODERS.get(type_name)
        if decode is None:
            return v.string_value
        try:
            return decode(v.string_value)
        except DataError:
            raise
        except (ValueError, OverflowError) as e:
            raise DataError(f"cannot convert the {type_name} value {v.string_value!r}: {e}"
                            ) from e
    if case == "double_value":
        return v.double_value
    if case == "bool_value":
        return v.bool_value
    if case == "numeric_value":
        return decimal.Decimal(v.numeric_value)
    if case == "bytes_value":
        return v.bytes_value
    if case == "json_value":
        try:
            return json.loads(v.json_value)
        except ValueError as e:
            raise DataError(f"the server sent invalid JSON: {e}") from e
    if case == "array_value":
        element = type_name[1:] if type_name.startswith("_") else type_name
        return [from_value(e, element) for e in v.array_value.values]
    raise DataError(f"a result value of an unknown kind ({case})")  # pragma: no cover
