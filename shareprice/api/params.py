"""Query parameters of the HTTP API, validated once, each failure naming the parameter.

Every parameter is read as text and checked here before any connection is taken: a value that
is not what the parameter takes (not an integer, negative, over the maximum, an injection
string) becomes a `ParamError` whose message starts with the parameter's name, and the route
answers 400 with it. Values reach SQL only as bound parameters of shareprice.queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from starlette.datastructures import QueryParams

from shareprice.errors import ShareError

_DIGITS = re.compile(r"[0-9]{1,19}")


class ParamError(ShareError, ValueError):
    """A parameter that cannot be taken as given; str() is the JSON error message."""


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


class Params:
    """One request's query parameters: each read at most once, repeated ones refused."""

    def __init__(self, query: QueryParams, known: Iterable[str], strict: bool) -> None:
        self._query = query
        known = set(known)
        for name in query:
            if name in known and len(query.getlist(name)) > 1:
                raise ParamError(f"{name}: given more than once")
            if strict and name not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise ParamError(f"{name}: unknown parameter (this endpoint takes {allowed})")

    def text(self, name: str) -> str | None:
        value = self._query.get(name)
        return None if value is None or value == "" else value

    def integer(
        self, name: str, *, minimum: int, maximum: int, default: int | None = None
    ) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        return parse_integer(name, value, minimum=minimum, maximum=maximum)

    def limit_or_all(self, name: str, *, maximum: int) -> int | None:
        """A positive integer up to `maximum`, or `all` (None); absent = all."""
        value = self.text(name)
        if value is None or value.lower() == "all":
            return None
        return parse_integer(name, value, minimum=1, maximum=maximum, extra="or all")

    def flag(self, name: str) -> bool:
        value = self.text(name)
        if value is None or value in ("0", "false"):
            return False
        if value in ("1", "true"):
            return True
        raise ParamError(f"{name}: 1 or 0, got {_show(value)}")

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value not in choices:
            raise ParamError(f"{name}: one of {', '.join(choices)}, got {_show(value)}")
        return value

    def operator_ids(self, name: str, *, maximum_count: int) -> tuple[int, ...] | None:
        """`0,1,2`: distinct operator ids (non-negative integers below 2^63), sorted."""
        value = self.text(name)
        if value is None:
            return None
        parts = [p.strip() for p in value.split(",")]
        ids: set[int] = set()
        for part in parts:
            if not _DIGITS.fullmatch(part) or int(part) >= 2**63:
                raise ParamError(
                    f"{name}: {_show(part)} is not an operator id (an integer 0 .. 2^63-1; "
                    "give ids separated by commas)"
                )
            ids.add(int(part))
        if len(ids) > maximum_count:
            raise ParamError(f"{name}: at most {maximum_count} operators, got {len(ids)}")
        return tuple(sorted(ids))


def parse_integer(name: str, value: str, *, minimum: int, maximum: int, extra: str = "") -> int:
    wanted = f"an integer {minimum} .. {maximum}" + (f" {extra}" if extra else "")
    if not _DIGITS.fullmatch(value.strip()):
        raise ParamError(f"{name}: {wanted}, got {_show(value)}")
    number = int(value.strip())
    if not minimum <= number <= maximum:
        raise ParamError(f"{name}: {wanted}, got {number}")
    return number


def known_or_error(name: str, ids: Sequence[int], known: Mapping[int, object] | set[int]) -> None:
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = ", ".join(str(u) for u in unknown[:5])
        raise ParamError(f"{name}: unknown operator id(s) {shown}")
