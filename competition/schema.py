"""The challenge's data contract: the one place that names files, columns, dtypes, the text-code format and limits.

Everything else imports from here; nobody re-types a file or column name. Facts follow ``docs/challenge.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------
# Event kinds and tables
# ---------------------------------------------------------------------------------------------------------------
PRODUCT_BUY = "product_buy"
ADD_TO_CART = "add_to_cart"
REMOVE_FROM_CART = "remove_from_cart"
PAGE_VISIT = "page_visit"
SEARCH_QUERY = "search_query"
PRODUCT_PROPERTIES = "product_properties"

#: The five event kinds, in the order that defines their integer code in the event table (0..4).
EVENT_TYPES: tuple[str, ...] = (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT, SEARCH_QUERY)
EVENT_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
#: Event kinds whose rows carry a sku.
SKU_EVENTS: tuple[str, ...] = (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART)

# Column names.
CLIENT_ID = "client_id"
TIMESTAMP = "timestamp"
SKU = "sku"
URL = "url"
QUERY = "query"
CATEGORY = "category"
PRICE = "price"
NAME = "name"

#: The item column each event kind carries besides client_id and timestamp.
ITEM_COLUMN: dict[str, str] = {
    PRODUCT_BUY: SKU,
    ADD_TO_CART: SKU,
    REMOVE_FROM_CART: SKU,
    PAGE_VISIT: URL,
    SEARCH_QUERY: QUERY,
}

#: Expected logical column types per table: "int" (any integer dtype), "timestamp" (string
#: ``YYYY-MM-DD HH:MM:SS`` or datetime), "codes" (string of 16 integers 0..255).
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    **{ev: {CLIENT_ID: "int", TIMESTAMP: "timestamp", ITEM_COLUMN[ev]: ("codes" if ev == SEARCH_QUERY else "int")}
       for ev in EVENT_TYPES},
    PRODUCT_PROPERTIES: {SKU: "int", CATEGORY: "int", PRICE: "int", NAME: "codes"},
}
#: Columns holding quantized text embeddings, per table.
CODE_COLUMNS: dict[str, str] = {SEARCH_QUERY: QUERY, PRODUCT_PROPERTIES: NAME}

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

# ---------------------------------------------------------------------------------------------------------------
# The 16-code text format
# ---------------------------------------------------------------------------------------------------------------
CODE_LEN = 16
CODE_MIN = 0
CODE_MAX = 255
#: A well-formed code string: brackets around exactly 16 unsigned integers separated by whitespace.
CODE_PATTERN = r"^\s*\[\s*(?:\d{1,3}\s+){15}\d{1,3}\s*\]\s*$"

# ---------------------------------------------------------------------------------------------------------------
# Limits and constants
# ---------------------------------------------------------------------------------------------------------------
N_PRICE_BUCKETS = 100
PRICE_MIN = 0
PRICE_MAX = N_PRICE_BUCKETS - 1
MAX_EMBEDDING_COLUMNS = 2048
TARGET_WINDOW_DAYS = 14
#: train_target_start = floor_to_day(last product_buy - SPLIT_OFFSET_DAYS days).
SPLIT_OFFSET_DAYS = 27
N_TARGETS = 100
EMBEDDING_DTYPE = "float16"
#: The largest finite float16 (a submission value beyond it would become inf).
FLOAT16_MAX = 65504.0
CLIENT_IDS_DTYPE = "int64"

# ---------------------------------------------------------------------------------------------------------------
# Tasks (docs/challenge.md section 4). Names are ours; the board's hidden names are kept for reference.
# ---------------------------------------------------------------------------------------------------------------
CHURN = "churn"
CONVERSION = "conversion"
PROPENSITY_CATEGORY = "propensity_category"
PROPENSITY_SKU = "propensity_sku"
PROPENSITY_NEW_SKU = "propensity_new_sku"
PROPENSITY_PRICE = "propensity_price"

TASKS: tuple[str, ...] = (CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU, CONVERSION, PROPENSITY_NEW_SKU,
                          PROPENSITY_PRICE)
BOARD_NAME: dict[str, str] = {CONVERSION: "hidden1", PROPENSITY_NEW_SKU: "hidden2", PROPENSITY_PRICE: "hidden3"}
#: Binary tasks scored by AUROC alone; their label is 1 = no product_buy in the window.
CHURN_TASKS: tuple[str, ...] = (CHURN, CONVERSION)
#: Multi-label tasks scored by 0.8 AUROC + 0.1 diversity + 0.1 novelty; value = the target column it reads.
PROPENSITY_TASKS: dict[str, str] = {
    PROPENSITY_CATEGORY: CATEGORY,
    PROPENSITY_SKU: SKU,
    PROPENSITY_NEW_SKU: SKU,
    PROPENSITY_PRICE: PRICE,
}
#: Churn is scored on active clients only; every other task on all relevant clients.
ACTIVE_ONLY_TASKS: tuple[str, ...] = (CHURN,)

# ---------------------------------------------------------------------------------------------------------------
# Paths (docs/challenge.md section 1)
# ---------------------------------------------------------------------------------------------------------------
INPUT_DIR = "input"
TARGET_DIR = "target"
TRUTH_DIR = "truth"
RELEVANT_CLIENTS_FILE = "relevant_clients.npy"
ACTIVE_CLIENTS_FILE = "active_clients.npy"
TRAIN_TARGET_FILE = "train_target.parquet"
VALIDATION_TARGET_FILE = "validation_target.parquet"
#: (ours) the split boundaries, so later steps need not recompute them.
SPLIT_TIMES_FILE = "split_times.json"
EMBEDDINGS_FILE = "embeddings.npy"
CLIENT_IDS_FILE = "client_ids.npy"
BLOCK_META_FILE = "meta.json"

#: Target list file stem per propensity task: target/<stem>.npy and target/popularity_<stem>.npy.
TARGET_LIST_STEM: dict[str, str] = {task: task for task in PROPENSITY_TASKS}

#: "raw": the released files at DATA_DIR/<event>.parquet; "input": the split's DATA_DIR/input/<event>.parquet.
LAYOUTS: tuple[str, ...] = ("raw", "input")


@dataclass(frozen=True)
class DataPaths:
    """Every path of a data directory in the organisers' layout."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    def table(self, name: str, layout: str = "raw") -> Path:
        """Parquet file of ``name`` (an event kind or product_properties) in ``layout`` ("raw" or "input")."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if name == PRODUCT_PROPERTIES or layout == "raw":
            return self.root / f"{name}.parquet"
        return self.root / INPUT_DIR / f"{name}.parquet"

    @property
    def relevant_clients(self) -> Path:
        return self.root / INPUT_DIR / RELEVANT_CLIENTS_FILE

    @property
    def active_clients(self) -> Path:
        return self.root / TARGET_DIR / ACTIVE_CLIENTS_FILE

    @property
    def train_target(self) -> Path:
        return self.root / TARGET_DIR / TRAIN_TARGET_FILE

    @property
    def validation_target(self) -> Path:
        return self.root / TARGET_DIR / VALIDATION_TARGET_FILE

    def target_list(self, task: str) -> Path:
        """target/<task>.npy: the ordered target entries (categories, skus or price buckets) of a propensity task."""
        return self.root / TARGET_DIR / f"{TARGET_LIST_STEM[task]}.npy"

    def popularity(self, task: str) -> Path:
        """target/popularity_<task>.npy: one popularity score per entry of :meth:`target_list`."""
        return self.root / TARGET_DIR / f"popularity_{TARGET_LIST_STEM[task]}.npy"

    @property
    def split_times(self) -> Path:
        return self.root / TARGET_DIR / SPLIT_TIMES_FILE

    @property
    def truth(self) -> Path:
        """Latents of a synthetic world (oracle measurements only; embedders never read them)."""
        return self.root / TRUTH_DIR

    @property
    def cache(self) -> Path:
        """Derived data (the event table) cached next to the data."""
        return self.root / ".cache"
