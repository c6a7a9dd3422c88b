"""Open a data directory in the organisers' layout as polars frames with normalised dtypes, and check it.

Normalised dtypes: ids and integer columns -> Int64, ``timestamp`` -> Datetime("us") (from the released
``YYYY-MM-DD HH:MM:SS`` strings or from any datetime dtype), ``name``/``query`` code strings -> Array(UInt8, 16).
Every problem with the input raises one :class:`DataError` that names the file, the column and what is wrong.

Lazy frames from :func:`scan_table` parse leniently (a bad value becomes null); :func:`check_table` runs one
streaming pass that counts bad values and raises. Builders (split, event table) call :func:`check_table` first.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl

from competition.schema import (CODE_LEN, CODE_MAX, CODE_MIN, CODE_PATTERN, EVENT_TYPES, PRICE, PRICE_MAX,
                                PRICE_MIN, PRODUCT_PROPERTIES, SKU, SKU_EVENTS, TABLE_COLUMNS, TIMESTAMP_FORMAT,
                                DataPaths)


class DataError(ValueError):
    """Bad input data. The message names the file, the column (where one is at fault) and the problem."""

    def __init__(self, path: str | Path, problem: str, column: str | None = None):
        self.path, self.column, self.problem = str(path), column, problem
        where = f"{path}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")


class DataWarning(UserWarning):
    """A tolerated problem in the input (e.g. events whose sku is absent from product_properties)."""


# ---------------------------------------------------------------------------------------------------------------
# The 16-code text format
# ---------------------------------------------------------------------------------------------------------------
def _code_values(column: str) -> pl.Expr:
    """List[UInt16] of the integers in each code string (any count)."""
    return pl.col(column).str.extract_all(r"\d+").list.eval(pl.element().cast(pl.UInt16, strict=False))


def code_ok(column: str) -> pl.Expr:
    """True where the string holds exactly 16 integers in 0..255 in the organisers' bracket format."""
    return pl.col(column).str.contains(CODE_PATTERN) & (_code_values(column).list.max() <= CODE_MAX)


def _codes_ok(column: str, dtype: pl.DataType) -> pl.Expr:
    """:func:`code_ok` for string columns; for integer list/array columns: exactly 16 non-null values in 0..255."""
    if dtype == pl.String:
        return parse_codes(column).is_not_null()  # code_ok's meaning, by the fast parser
    values = pl.col(column).arr.to_list() if isinstance(dtype, pl.Array) else pl.col(column)
    values = values.cast(pl.List(pl.Int64), strict=False)
    return ((values.list.len() == CODE_LEN) & (values.list.drop_nulls().list.len() == CODE_LEN)
            & (values.list.min() >= CODE_MIN) & (values.list.max() <= CODE_MAX))


def _parse_codes_expr(column: str) -> pl.Expr:
    """The reference parser (regex and list expressions): what :func:`parse_codes` means, and its fallback."""
    values = _code_values(column)
    return (pl.when(code_ok(column)).then(values).otherwise(None)
            .list.eval(pl.element().cast(pl.UInt8, strict=False)).list.to_array(CODE_LEN).alias(column))


#: Strings parsed per numpy pass of :func:`parse_code_strings` (bounds its temporaries to ~100 bytes a string).
_CODE_BATCH = 1 << 20
_CODES_DTYPE = pl.Array(pl.UInt8, CODE_LEN)


def parse_code_strings(strings: pl.Series) -> pl.Series:
    """Array(UInt8, 16) series of code strings; malformed strings become null, exactly as the regex
    :data:`CODE_PATTERN` and the 0..255 range say (:func:`code_ok`).

    The layout numpy prints (and :func:`format_codes` writes) is parsed from the strings' bytes as a fixed-width
    table, several times faster than the regex: ``[`` then 16 fields of width w (1-3; right-aligned digits after
    spaces) joined by one space, then ``]``. Strings in any other layout (extra spaces, tabs, malformed) go through
    the regex parser, which decides.
    """
    strings = strings.cast(pl.String)
    parts = [_parse_code_batch(strings.slice(i, _CODE_BATCH)) for i in range(0, len(strings), _CODE_BATCH)]
    return pl.concat(parts) if parts else pl.Series(strings.name, [], dtype=_CODES_DTYPE)


def _parse_code_batch(strings: pl.Series) -> pl.Series:
    arrow = strings.to_arrow().cast("large_string")
    n = len(arrow)
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset:arrow.offset + n + 1]
    raw = arrow.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    lengths[strings.is_null().to_numpy()] = -1
    codes = np.zeros((n, CODE_LEN), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for width in (1, 2, 3):
        size = 2 + CODE_LEN * (width + 1) - 1
        rows = np.flatnonzero(lengths == size)
        if len(rows):  # each row's bytes from a view of every size-byte window of the buffer (no index table)
            table = np.lib.stride_tricks.sliding_window_view(data, size)[offsets[rows]]
            codes[rows], ok[rows] = _fixed_width_codes(table, width)
    rest = np.flatnonzero(~ok)
    if len(rest):  # the regex decides the rest; what it parses joins the fast rows
        slow = pl.DataFrame({"s": strings.gather(rest)}).select(_parse_codes_expr("s")).to_series()
        parsed = ~slow.is_null().to_numpy()
        codes[rest[parsed]] = codes_to_numpy(slow.filter(pl.Series(parsed)))
        ok[rest[parsed]] = True
    return pl.DataFrame({"c": pl.Series(codes, dtype=_CODES_DTYPE), "ok": ok}).select(
        pl.when("ok").then("c").alias(strings.name)).to_series()


def _fixed_width_codes(table: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 ``(n, 16)``, ok bool ``(n,)``) of strings of one length as a byte table ``(n, 2 + 16 *
    (width + 1) - 1)``: ``[``, 16 fields of ``width`` bytes joined by single spaces, ``]``; a field is spaces then
    at least one digit, value at most 255."""
    ok = (table[:, 0] == ord("[")) & (table[:, -1] == ord("]"))
    value = np.zeros((len(table), CODE_LEN), dtype=np.uint16)
    seen_digit = np.zeros((len(table), CODE_LEN), dtype=bool)
    for j in range(width):  # byte j of every field, left to right: spaces, then digits only
        byte = table[:, 1 + j:-1:width + 1]
        digit = (byte >= ord("0")) & (byte <= ord("9"))
        ok &= (digit | ((byte == ord(" ")) & ~seen_digit)).all(axis=1)
        value = value * 10 + np.where(digit, byte - ord("0"), 0)
        seen_digit |= digit
    ok &= seen_digit.all(axis=1) & (value <= CODE_MAX).all(axis=1)
    ok &= (table[:, 1 + width:-1:width + 1] == ord(" ")).all(axis=1)  # the separators
    return np.where(ok[:, None], value, 0).astype(np.uint8), ok


def parse_codes(column: str) -> pl.Expr:
    """Expr turning code strings into Array(UInt8, 16); malformed strings become null (see :func:`check_table`).
    :func:`parse_code_strings`, batch by batch."""
    return pl.col(column).map_batches(parse_code_strings, return_dtype=_CODES_DTYPE,
                                      is_elementwise=True).alias(column)  # row by row: streams in batches


def format_codes(codes: np.ndarray) -> pl.Series:
    """Code strings in the released numpy style (``"[202 151  55 ...]"``, each value right-aligned to width 3).

    codes: uint8 ``(n, 16)``. Vectorised: one string column per position, then one concatenation.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != CODE_LEN:
        raise ValueError(f"codes must have shape (n, {CODE_LEN}), got {codes.shape}")
    frame = pl.DataFrame({f"c{i}": codes[:, i].astype(np.uint8) for i in range(CODE_LEN)})
    parts = [pl.col(f"c{i}").cast(pl.String).str.pad_start(3) for i in range(CODE_LEN)]
    return frame.select(pl.concat_str([pl.lit("["), pl.concat_str(parts, separator=" "), pl.lit("]")])
                        .alias("codes")).to_series()


def codes_to_numpy(series: pl.Series) -> np.ndarray:
    """uint8 ``(n, 16)`` from an Array(UInt8, 16) series without nulls."""
    if len(series) == 0:
        return np.zeros((0, CODE_LEN), dtype=np.uint8)
    return series.to_numpy().astype(np.uint8, copy=False).reshape(len(series), CODE_LEN)


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(path, "file is missing")


def _schema(path: Path) -> pl.Schema:
    _require_file(path)
    try:
        return pl.scan_parquet(path).collect_schema()
    except Exception as exc:  # not parquet, truncated...
        raise DataError(path, f"cannot be read as parquet ({type(exc).__name__}: {exc})") from exc


def normalise_column(column: str, kind: str, dtype: pl.DataType, path: Path) -> pl.Expr:
    """Expr converting ``column`` of logical ``kind`` ("int", "timestamp", "codes") to its normalised dtype."""
    if kind == "int":
        if not dtype.is_integer():
            raise DataError(path, f"expected an integer dtype, found {dtype}", column)
        return pl.col(column).cast(pl.Int64)
    if kind == "timestamp":
        if dtype == pl.String:
            return pl.col(column).str.to_datetime(TIMESTAMP_FORMAT, time_unit="us", strict=False, cache=False)
        if isinstance(dtype, (pl.Datetime, pl.Date)):
            return pl.col(column).cast(pl.Datetime("us"))
        raise DataError(path, f"expected a 'YYYY-MM-DD HH:MM:SS' string or a datetime, found {dtype}", column)
    if kind == "codes":
        if dtype == pl.String:
            return parse_codes(column)
        if isinstance(dtype, (pl.Array, pl.List)) and dtype.inner.is_integer():
            return pl.col(column).cast(pl.List(pl.UInt8)).list.to_array(CODE_LEN)
        raise DataError(path, f"expected a string of {CODE_LEN} integers, found {dtype}", column)
    raise ValueError(kind)


def scan_table(data_dir: str | Path, name: str, layout: str = "raw") -> pl.LazyFrame:
    """Lazy frame of table ``name`` (an event kind or product_properties) with normalised dtypes.

    Checks that the file exists, is parquet and has the expected columns with acceptable dtypes; value-level
    problems (unparsable timestamp, bad code string) become nulls here and are reported by :func:`check_table`.
    """
    if name not in TABLE_COLUMNS:
        raise ValueError(f"unknown table {name!r}; expected one of {sorted(TABLE_COLUMNS)}")
    path = DataPaths(data_dir).table(name, layout)
    schema = _schema(path)
    exprs = []
    for column, kind in TABLE_COLUMNS[name].items():
        if column not in schema:
            raise DataError(path, f"column is missing (found {list(schema)})", column)
        exprs.append(normalise_column(column, kind, schema[column], path).alias(column))
    return pl.scan_parquet(path).select(exprs)


def check_table(data_dir: str | Path, name: str, layout: str = "raw") -> int:
    """Validate every value of a table in one streaming pass; returns its row count.

    Raises :class:`DataError` for nulls, unparsable timestamps, code strings without exactly 16 integers in
    0..255 and prices outside 0..99.
    """
    path = DataPaths(data_dir).table(name, layout)
    schema = _schema(path)
    scan_table(data_dir, name, layout)  # columns present, dtypes acceptable
    raw = pl.scan_parquet(path)
    checks = [pl.len().alias("__rows")]
    for column, kind in TABLE_COLUMNS[name].items():
        checks.append(pl.col(column).null_count().alias(f"null:{column}"))
        if kind == "timestamp" and schema[column] == pl.String:
            checks.append((pl.col(column).is_not_null()
                           & pl.col(column).str.to_datetime(TIMESTAMP_FORMAT, time_unit="us", strict=False, cache=False)
                           .is_null()).sum().alias(f"timestamp:{column}"))
        if kind == "codes":
            checks.append((pl.col(column).is_not_null() & ~_codes_ok(column, schema[column]).fill_null(False))
                          .sum().alias(f"codes:{column}"))
    if name == PRODUCT_PROPERTIES:
        checks.append((pl.col(PRICE).cast(pl.Int64).is_between(PRICE_MIN, PRICE_MAX).not_()).sum().alias("price"))
    try:
        counts = raw.select(checks).collect(engine="streaming").row(0, named=True)
    except Exception as exc:
        raise DataError(path, f"cannot be scanned ({type(exc).__name__}: {exc})") from exc
    for key, count in counts.items():
        if key == "__rows" or not count:
            continue
        kind, _, column = key.partition(":")
        sample = _bad_sample(raw, kind, column or PRICE, schema)
        if kind == "null":
            raise DataError(path, f"{count} null value(s)", column)
        if kind == "timestamp":
            raise DataError(path, f"{count} unparsable timestamp(s), expected {TIMESTAMP_FORMAT!r}; e.g. {sample!r}",
                            column)
        if kind == "codes":
            raise DataError(path, f"{count} value(s) without exactly {CODE_LEN} integers in 0..{CODE_MAX}; "
                                  f"e.g. {sample!r}", column)
        if kind == "price":
            raise DataError(path, f"{count} price(s) outside {PRICE_MIN}..{PRICE_MAX}; e.g. {sample!r}", PRICE)
    return int(counts["__rows"])


def _bad_sample(raw: pl.LazyFrame, kind: str, column: str, schema: pl.Schema):
    """One offending value, for the error message."""
    if kind == "timestamp":
        cond = pl.col(column).is_not_null() & pl.col(column).str.strptime(
            pl.Datetime("us"), TIMESTAMP_FORMAT, strict=False).is_null()
    elif kind == "codes":
        cond = pl.col(column).is_not_null() & ~_codes_ok(column, schema[column]).fill_null(False)
    elif kind == "price":
        cond = ~pl.col(column).cast(pl.Int64).is_between(PRICE_MIN, PRICE_MAX)
    else:
        return None
    rows = raw.filter(cond).select(column).head(1).collect()
    if not len(rows):
        return None
    value = rows.item()
    return value.to_list() if isinstance(value, pl.Series) else value


def read_products(data_dir: str | Path, check: bool = True) -> pl.DataFrame:
    """product_properties: sku, category, price (Int64), name (Array(UInt8, 16)); one row per sku."""
    if check:
        check_table(data_dir, PRODUCT_PROPERTIES)
    products = scan_table(data_dir, PRODUCT_PROPERTIES).collect()
    n_dup = len(products) - products[SKU].n_unique()
    if n_dup:
        raise DataError(DataPaths(data_dir).table(PRODUCT_PROPERTIES), f"{n_dup} duplicate sku row(s)", SKU)
    return products


def unique_ints(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for integers (ids), by a sort: the same sorted array. numpy 2.4's ``np.unique``
    finds the distinct values with a hash table first, which on 1M distinct client ids took 0.81 s against 0.014 s
    for this (sorted ids) and 0.43 s against 0.08 s on 10M values with 1,000 distinct ones."""
    values = np.sort(np.asarray(values).ravel())
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _read_ids(path: Path, what: str) -> np.ndarray:
    _require_file(path)
    try:
        ids = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(path, f"cannot be read as .npy ({exc})") from exc
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(path, f"{what} must be a 1-D integer array, got {ids.dtype} with shape {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    uniq = unique_ints(ids)
    if len(uniq) != len(ids):
        raise DataError(path, f"{len(ids) - len(uniq)} duplicate client id(s) in {what}")
    return ids


def read_relevant_clients(data_dir: str | Path) -> np.ndarray:
    """input/relevant_clients.npy: int64 ``(n,)``, unique, in file order."""
    return _read_ids(DataPaths(data_dir).relevant_clients, "relevant clients")


def read_active_clients(data_dir: str | Path) -> np.ndarray:
    """target/active_clients.npy: int64 ``(n,)``, unique."""
    return _read_ids(DataPaths(data_dir).active_clients, "active clients")


def unknown_skus_by_kind(data_dir: str | Path, layout: str = "raw", products: pl.DataFrame | None = None
                         ) -> dict[str, int]:
    """Events whose sku is absent from product_properties, per event kind that has any (tolerated, not an error;
    no warning: the event table records them and ``submit.pack`` says so in one line)."""
    products = read_products(data_dir) if products is None else products
    known = products.lazy().select(SKU)
    out = {}
    for event in SKU_EVENTS:
        n = (scan_table(data_dir, event, layout).filter(pl.col(SKU).is_not_null())  # nulls: check_table's errors
             .join(known, on=SKU, how="anti").select(pl.len())
             .collect(engine="streaming").item())
        if n:
            out[event] = int(n)
    return out


def count_unknown_skus(data_dir: str | Path, layout: str = "raw", products: pl.DataFrame | None = None) -> int:
    """Events whose sku is absent from product_properties: counted and warned about (:class:`DataWarning`, one per
    file; tolerated, not an error)."""
    counts = unknown_skus_by_kind(data_dir, layout, products)
    for event, n in counts.items():
        warnings.warn(f"{DataPaths(data_dir).table(event, layout)}: {n} event(s) with a sku missing from "
                      f"{PRODUCT_PROPERTIES}; their category and price are unknown", DataWarning, stacklevel=2)
    return sum(counts.values())


def check_data_dir(data_dir: str | Path, layout: str = "raw") -> dict[str, int]:
    """Check every table of a layout and the relevant clients; returns row counts per table."""
    rows = {event: check_table(data_dir, event, layout) for event in EVENT_TYPES}
    products = read_products(data_dir)
    rows[PRODUCT_PROPERTIES] = len(products)
    read_relevant_clients(data_dir)
    rows["unknown_sku_events"] = count_unknown_skus(data_dir, layout, products)
    return rows


__all__ = ["DataError", "DataWarning", "scan_table", "check_table", "check_data_dir", "read_products",
           "read_relevant_clients", "read_active_clients", "normalise_column", "parse_codes", "format_codes", "codes_to_numpy",
           "code_ok", "count_unknown_skus", "unknown_skus_by_kind", "unique_ints"]
