"""The read side of the API: GET of one resource and of lists, with Mistral's
``fields=``, filters (``eq:``, ``in:``...), sorting with NULLS LAST, and pagination by
marker with a ``next`` link."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

from .request import Request
from .schema import JSON, KINDS, ApiError, Record, norm_ts, not_found
from .store import Store

__all__ = ["LIST_ARGS", "fields_of", "render", "sort_rows", "compare", "parse_filters", "match", "Reads"]

_DATES = frozenset(
    {"created_at", "updated_at", "started_at", "finished_at", "first_execution_time",
     "next_execution_time"}
)
_BOOLS = frozenset({"processed", "is_system", "reset", "all_projects", "include_output", "force"})
_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "has", "in", "nin")
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le,
    "gt": operator.gt, "gte": operator.ge, "in": lambda x, v: x in v,
    "nin": lambda x, v: x not in v, "has": lambda x, v: v in x,
}
LIST_ARGS = frozenset({"marker", "limit", "sort_keys", "sort_dirs", "fields"})
"""The query parameters every list takes besides its filters."""


def fields_of(kind: str, raw: str | None) -> list[str]:
    """Parse ``fields=`` like Mistral: unique, lower-cased, validated, 'id' first."""
    fields = list(dict.fromkeys(f.strip() for f in (raw or "").lower().split(",") if f.strip()))
    bad = set(fields) - set(KINDS[kind].fields)
    if bad:
        raise ApiError(400, "Some fields do not exist  [{}], please choose from [{}]".format(
            ", ".join(sorted(bad)), ", ".join(KINDS[kind].fields)))
    if fields and "id" not in fields:
        fields.insert(0, "id")
    return fields


def render(kind: str, rec: Record, fields: list[str], listing: bool = False,
           include_output: bool = False) -> JSON:
    """A resource as the API shows it: ``fields`` only, or all but what lists hide."""
    spec = KINDS[kind]
    if fields:
        return {f: rec.get(f) for f in spec.fields if f in fields}
    hidden = spec.hidden_in_lists if listing else frozenset()
    if include_output:
        hidden = hidden - {"output"}
    return {f: rec.get(f) for f in spec.fields if f not in hidden}


def _nulls_last(key: str) -> Callable[[Record], tuple[bool, Any]]:
    """Sort key on ``key`` with None after every value (NULLS LAST, as PostgreSQL)."""

    def get(rec: Record) -> tuple[bool, Any]:
        value = rec.get(key)
        return (value is None, "" if value is None else value)

    return get


def sort_rows(rows: list[Record], keys: list[str], dirs: list[str]) -> None:
    """Sort in place like :func:`compare`, one stable pass per key, last key first."""
    for key, direction in reversed(list(zip(keys, dirs))):
        rows.sort(key=_nulls_last(key), reverse=direction == "desc")


def compare(a: Record, b: Record, *, keys: list[str], dirs: list[str]) -> int:
    """-1, 0 or 1: ``a`` before, level with or after ``b`` in the list's order."""
    for key, direction in zip(keys, dirs):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if x is None or y is None:
            result = 1 if x is None else -1  # NULLS LAST ascending, as PostgreSQL
        else:
            try:
                result = -1 if x < y else 1
            except TypeError:
                result = -1 if str(x) < str(y) else 1
        return result if direction == "asc" else -result
    return 0


def parse_filters(kind: str, params: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """The list filters in ``params`` as (field, operator, typed value or values)."""
    out: list[tuple[str, str, Any]] = []
    for name in sorted(KINDS[kind].filters - {"all_projects", "include_output", "nulls"}):
        if name not in params:
            continue
        raw = params[name]
        op, value = "eq", raw
        for candidate in _OPS:
            if raw.startswith(candidate + ":"):
                op, value = raw.split(":", 1)
                break
        values: list[Any] = value.split(",") if op in ("in", "nin") else [value]
        if name in _DATES:
            values = [norm_ts(v) for v in values]
        elif name in _BOOLS:
            values = [v.lower() in ("true", "1", "yes", "on") for v in values]
        elif name == "remaining_executions":
            try:
                values = [int(v) for v in values]
            except ValueError:
                raise ApiError(400, f"Invalid integer filter: {raw!r}") from None
        out.append((name, op, values if op in ("in", "nin") else values[0]))
    return out


def match(rec: Record, name: str, op: str, value: Any) -> bool:
    """Whether ``rec`` passes one filter (a field it lacks passes; a null fails)."""
    if name not in rec:
        return True
    x = rec[name]
    if x is None:
        return False
    try:
        return bool(_COMPARE[op](x, value))
    except TypeError:
        raise ApiError(400, f"Cannot apply filter {op} to field {name}") from None


class Reads:
    """The GET handlers; ``max_limit`` caps a page."""

    def __init__(self, store: Store, max_limit: int) -> None:
        self.store = store
        self.max_limit = max_limit

    def limit(self, raw: str | None) -> int:
        """The page size ``limit=`` asks for, capped at ``max_limit``."""
        if raw is None or raw == "":
            return self.max_limit
        try:
            limit = int(raw)
        except ValueError:
            raise ApiError(400, f"Invalid input for field/attribute limit. Value: '{raw}'.") from None
        if limit <= 0:
            raise ApiError(400, "Limit must be positive.")
        return min(limit, self.max_limit)

    def get_simple(self, kind: str, req: Request) -> tuple[int, Any]:
        req.allow({"fields"})
        fields = fields_of(kind, req.params.get("fields"))
        by_name = kind in ("environments", "cron_triggers")
        rec = self.store.records[kind].get(req.ident)
        if rec is None and by_name:
            rec = self.store.find(kind, req.ident, None, req.project, by_id=False)
        if rec is None or not self.store.visible(rec, req.project):
            raise not_found(kind, **({"name": req.ident} if by_name else {"id": req.ident}))
        return 200, render(kind, rec, fields)

    def get_named_ns(self, kind: str, req: Request) -> tuple[int, Any]:
        req.allow({"namespace", "fields"})
        fields = fields_of(kind, req.params.get("fields"))
        namespace = req.params.get("namespace", "")
        rec = self.store.find(kind, req.ident, namespace, req.project)
        if rec is None:
            key = "workflow_identifier" if kind == "workflows" else "name"
            raise not_found(kind, **{key: req.ident, "namespace": namespace})
        return 200, render(kind, rec, fields)

    def list_kind(self, kind: str, req: Request, scope: Callable[[Record], bool] | None = None,
             extra_filters: frozenset[str] = frozenset()) -> tuple[int, Any]:
        spec = KINDS[kind]
        allowed = (spec.filters | LIST_ARGS) - extra_filters
        req.allow(allowed)
        p = req.params
        limit = self.limit(p.get("limit"))
        keys = [k.strip().lower() for k in (p.get("sort_keys") or "created_at").split(",") if k.strip()]
        dirs = [d.strip().lower() for d in (p.get("sort_dirs") or "asc").split(",") if d.strip()]
        if len(keys) < len(dirs):
            raise ApiError(400, "Length of sort_keys must be equal or greater than sort_dirs.")
        dirs += ["asc"] * (len(keys) - len(dirs))
        if any(d not in ("asc", "desc") for d in dirs):
            raise ApiError(400, "Unknown sort direction, must be 'desc' or 'asc'.")
        if any(k not in spec.fields for k in keys):
            raise ApiError(400, f"Invalid sort key: {p.get('sort_keys')}")
        if "id" not in keys:
            keys.append("id")
            dirs.append("asc")
        fields = fields_of(kind, p.get("fields"))
        filters = parse_filters(kind, p)
        nulls = [n.strip() for n in p.get("nulls", "").split(",") if n.strip()]
        everyone = req.flag("all_projects")
        rows = [
            rec for rec in self.store.records[kind].values()
            if self.store.visible(rec, req.project, everyone) and (scope is None or scope(rec))
            and all(match(rec, f, op, v) for f, op, v in filters)
            and all(rec.get(n) is None for n in nulls)
        ]
        sort_rows(rows, keys, dirs)
        after = functools.partial(compare, keys=keys, dirs=dirs)
        marker = p.get("marker")
        if marker:
            mrec = self.store.records[kind].get(marker)
            if mrec is None:
                raise not_found(kind, id=marker)
            rows = [r for r in rows if after(r, mrec) > 0]
        rows = rows[:limit]
        req.items = len(rows)
        out: JSON = {kind: [render(kind, r, fields, True, req.flag("include_output"))
                            for r in rows]}
        if rows and len(rows) == limit:
            args = f"sort_keys={','.join(keys)}&sort_dirs={','.join(dirs)}&"
            for f, op, v in filters:
                args += f"{f}={op}:{','.join(v) if isinstance(v, list) else v}&"
            nxt = f"http://{req.host}/v2/{kind}?{args}limit={limit}&marker={rows[-1]['id']}"
            if fields:
                nxt += f"&fields={','.join(fields)}"
            out["next"] = nxt
        return 200, out

    def list_execution_tasks(self, req: Request) -> tuple[int, Any]:
        ex_id = req.ident
        return self.list_kind("tasks", req, lambda r: r["workflow_execution_id"] == ex_id,
                         frozenset({"workflow_execution_id"}))

    def list_actions(self, req: Request) -> tuple[int, Any]:
        # Mirrors Mistral's action controller: sorted by name, the marker is a name and
        # its row is included again, an unknown marker restarts, no max_limit clamp.
        req.allow(KINDS["actions"].filters | LIST_ARGS)
        p = req.params
        namespace = p.get("namespace", "")
        limit = self.limit(p["limit"]) if p.get("limit") else None
        keys = [k for k in (p.get("sort_keys") or "name").lower().split(",") if k]
        dirs = [d for d in (p.get("sort_dirs") or "asc").lower().split(",") if d]
        dirs += ["asc"] * (len(keys) - len(dirs))
        filters = [f for f in parse_filters("actions", p) if f[0] != "namespace"]
        rows = [r for r in self.store.records["actions"].values()
                if r["namespace"] == namespace and self.store.visible(r, req.project)
                and all(match(r, f, op, v) for f, op, v in filters)]
        sort_rows(rows, keys, dirs)
        start = next((i for i, r in enumerate(rows) if r["name"] == p.get("marker")), 0)
        if limit:
            rows = rows[start:start + limit]
        req.items = len(rows)
        fields = fields_of("actions", p.get("fields"))
        out: JSON = {"actions": [render("actions", r, fields) for r in rows]}
        if limit and rows and len(rows) == limit:
            out["next"] = (f"http://{req.host}/v2/actions?sort_keys={','.join(keys)}&sort_dirs="
                           f"{','.join(dirs)}&limit={limit}&marker={rows[-1]['id']}")
        return 200, out

    def get_action(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        namespace = req.extra
        rec = self.store.find("actions", req.ident, namespace, req.project)
        if rec is None:
            raise ApiError(404, f"Action not found [name={req.ident}, namespace={namespace}]")
        return 200, render("actions", rec, [])
