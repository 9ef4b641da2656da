"""Translates "pyformat"/"format" placeholders to PostgreSQL's $1..$n.

psycopg2's rules, with the parameters bound by the server instead of spliced
into the text: with parameters (even an empty sequence or mapping) ``%s`` is a
positional placeholder, ``%(name)s`` a named one (the same name is the same
``$n`` however often it appears) and ``%%`` a literal ``%``; without
parameters (``None``) the SQL is sent as it is. Unlike psycopg2 the
translation knows PostgreSQL's lexical structure: inside string literals
('...', E'...', $tag$...$tag$), quoted identifiers and comments a ``%`` is
never a placeholder (``%%`` still reads as ``%``, as SQLAlchemy writes it), so
``LIKE 'a%'`` works with parameters too. Outside them a ``%`` followed by
anything else is a ProgrammingError, as in psycopg2.

Pure functions with a small bounded cache: thread-safe.
"""

import functools
import re
from typing import Any, List, Mapping, Sequence, Tuple, Union

from sessionbroker._errors import ProgrammingError

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$")
_NAMED = re.compile(r"%\(([^)]*)\)s")


@functools.lru_cache(maxsize=512)
def _parse(sql: str) -> Tuple[str, Tuple[Union[int, str], ...], str]:
    """Returns (SQL with $n, the placeholders in $n order, the style used).

    A placeholder is an int (the position of a %s) or a str (a %(name)s).
    The style is "format", "pyformat" or "" (none).
    """
    out: List[str] = []
    order: List[Union[int, str]] = []
    names: dict = {}
    style = ""
    i, n = 0, len(sql)

    def literal_percent(chunk: str) -> str:
        return chunk.replace("%%", "%")

    while i < n:
        c = sql[i]
        if c == "'" or ((c in "eE") and i + 1 < n and sql[i + 1] == "'"
                        and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_"))):
            # A string literal; E'' strings take backslash escapes.
            escapes = c != "'"
            j = i + (2 if escapes else 1)
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append(literal_percent(sql[i:j + 1]))
            i = j + 1
        elif c == '"':
            j = sql.find('"', i + 1)
            while j != -1 and j + 1 < n and sql[j + 1] == '"':
                j = sql.find('"', j + 2)
            j = n - 1 if j == -1 else j
            out.append(literal_percent(sql[i:j + 1]))
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j == -1 else j
            out.append(literal_percent(sql[i:j]))
            i = j
        elif c == "/" and sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(literal_percent(sql[i:j]))
            i = j
        elif c == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                end = sql.find(m.group(0), m.end())
                j = n if end == -1 else end + len(m.group(0))
                out.append(literal_percent(sql[i:j]))
                i = j
            else:
                out.append(c)
                i += 1
        elif c == "%":
            nxt = sql[i + 1] if i + 1 < n else ""
            if nxt == "%":
                out.append("%")
                i += 2
            elif nxt == "s":
                if style == "pyformat":
                    raise ProgrammingError("the SQL mixes %s and %(name)s placeholders")
                style = "format"
                order.append(len(order))
                out.append(f"${len(order)}")
                i += 2
            elif nxt == "(":
                m = _NAMED.match(sql, i)
                if not m:
                    raise ProgrammingError(
                        f"incomplete placeholder at character {i + 1}: %(name)s expected "
                        "(write %% for a literal %)")
                if style == "format":
                    raise ProgrammingError("the SQL mixes %s and %(name)s placeholders")
                style = "pyformat"
                name = m.group(1)
                if name not in names:
                    order.append(name)
                    names[name] = len(order)
                out.append(f"${names[name]}")
                i = m.end()
            else:
                raise ProgrammingError(
                    f"unsupported placeholder %{nxt} at character {i + 1}: only %s and "
                    "%(name)s are placeholders; write %% for a literal %")
        else:
            # Copy a run of ordinary characters at once.
            j = i + 1
            while j < n and sql[j] not in "'\"-/$%eE":
                j += 1
            out.append(sql[i:j])
            i = j
    return "".join(out), tuple(order), style


def placeholder_names(sql: str) -> Tuple[Union[int, str], ...]:
    """The placeholders of `sql` in $n order: names for %(name)s, positions for %s."""
    return _parse(sql)[1]


def translate(sql: str, params: Union[Sequence[Any], Mapping[str, Any], None]
              ) -> Tuple[str, List[Any]]:
    """SQL with $1..$n and the parameter values in that order.

    Raises ProgrammingError when the parameters do not match the placeholders.
    """
    if params is None:
        return sql, []
    text, order, style = _parse(sql)
    if isinstance(params, Mapping):
        if style == "format":
            raise ProgrammingError("the SQL uses %s placeholders but the parameters are a mapping")
        try:
            return text, [params[name] for name in order]
        except KeyError as e:
            raise ProgrammingError(f"no value for the placeholder %({e.args[0]})s") from None
    if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
        raise ProgrammingError(
            f"parameters must be a sequence or a mapping, not {type(params).__name__}")
    if style == "pyformat":
        raise ProgrammingError("the SQL uses %(name)s placeholders but the parameters are a "
                               "sequence")
    if len(params) != len(order):
        raise ProgrammingError(f"the SQL has {len(order)} %s placeholders but {len(params)} "
                               "parameters were given")
    return text, list(params)
