"""`--pretty`: a command's JSON result as plain-text tables (the server package keeps its own copy:
neither package imports the other). Floats to 4 places, long vectors summarised."""

from __future__ import annotations

import json

SHORT = 8  # number lists up to this long are shown whole (or spread over columns)
WIDTH = 60  # widest cell; longer ones are cut with "..."


def render(obj) -> str:
    """A dict as `key  value` lines, then a table per list it holds; a list as one table."""
    if isinstance(obj, list):
        return table(rows(obj))
    if not isinstance(obj, dict):
        return cell(obj)
    columns = _same_length_columns(obj)
    plain = {k: v for k, v in obj.items() if k not in columns and not _nested(v)}
    parts = [_key_values(plain)] if any(v is not None for v in plain.values()) else []
    if columns:
        parts.append(table([dict(zip(columns, values)) for values in zip(*columns.values())]))
    parts += [f"{k}:\n{table(rows(v))}" for k, v in obj.items() if k not in columns and _nested(v)]
    return "\n\n".join(parts)


def rows(items: list) -> list[dict]:
    """One row per item; an item's list of dicts (e.g. an image's captions) becomes a row each,
    its own fields shown on the first of them; an item that is itself a list is numbered."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            out += _explode(item)
        elif isinstance(item, list) and item and all(isinstance(x, dict) for x in item):
            out += [{"#": i, **sub} for child in item for sub in _explode(child)]
        elif _short_numbers(item):
            out.append({"#": i, **{str(j): x for j, x in enumerate(item)}})
        else:
            out.append({"#": i, "value": item})
    return out


def table(records: list[dict]) -> str:
    names = list(dict.fromkeys(k for r in records for k, v in r.items() if v is not None))  # no empty columns
    if not names:
        return "(none)"
    grid = [names] + [[cell(r.get(k)) for k in names] for r in records]
    widths = [max(len(line[c]) for line in grid) for c in range(len(names))]
    numeric = [all(_is_number(r.get(k)) for r in records if r.get(k) is not None) for k in names]

    def line(cells):
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(names), line(["-" * w for w in widths]), *map(line, grid[1:])])


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and value and all(_is_number(x) for x in value):
        shown = ", ".join(map(cell, value[:2] if len(value) > SHORT else value))
        if len(value) <= SHORT:
            return f"[{shown}]"
        return f"dim {len(value)} [{shown}, ...]" if any(isinstance(x, float) for x in value) \
            else f"{len(value)} items [{shown}, ...]"
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        text = ", ".join(value)
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= WIDTH else text[:WIDTH - 3] + "..."


def _explode(item: dict) -> list[dict]:
    """The first list-of-dicts field spread over rows; the rest of the item on the first row."""
    key = next((k for k, v in item.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)), None)
    if key is None:
        return [item]
    own = {k: v for k, v in item.items() if k != key}
    children = [{(f"{key}.{k}" if k in own else k): v for k, v in child.items()} for child in item[key]]
    return [{**(own if i == 0 else {}), **child} for i, child in enumerate(children)]


def _same_length_columns(obj: dict) -> dict:
    """Two or more lists of plain values of one length (e.g. texts and their scores) read best side by side."""
    lists = {k: v for k, v in obj.items() if isinstance(v, list) and len(v) > 1
             and all(not isinstance(x, (list, dict)) for x in v)}
    lengths = [len(v) for v in lists.values()]
    common = max(set(lengths), key=lengths.count) if lengths else 0
    picked = {k: v for k, v in lists.items() if len(v) == common}
    return picked if len(picked) > 1 else {}


def _nested(value) -> bool:
    return isinstance(value, list) and any(isinstance(x, (list, dict)) for x in value)


def _key_values(obj: dict) -> str:
    shown = {k: v for k, v in obj.items() if v is not None}
    width = max(map(len, shown), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}".rstrip() for k, v in shown.items())


def _short_numbers(value) -> bool:
    return isinstance(value, list) and 0 < len(value) <= SHORT and all(_is_number(x) for x in value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
