"""CDNOW loader: customer purchase lines (``CDNOW_master.txt``) as interactions and user totals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.datasets.text import (
    Table,
    format_error,
    interactions_frame,
    number_values,
    raise_at_first,
    read_fields,
    require_file,
)
from features.datasets.types import RatingsDataset

CDNOW_ITEM_ID = "cdnow"
"""CDNOW records purchases, not products: every interaction points at this one pseudo item."""

CDNOW_FILE = "CDNOW_master.txt"


def load_cdnow(path: Path) -> RatingsDataset:
    """Load CDNOW purchases from ``CDNOW_master.txt`` (or a folder holding it).

    Each line is ``customer_id date(YYYYMMDD) number_of_cds dollar_value``, whitespace-separated;
    a header line (as in the lifetimes copy) is skipped. Interactions: ``user_id`` is the customer
    id without its zero padding (``00001`` → ``"1"``), ``item_id`` is :data:`CDNOW_ITEM_ID`,
    ``rating`` is the dollar amount, ``timestamp`` the purchase date at midnight UTC, and
    ``quantity`` (int64) the number of CDs. Users, in file order: ``first_purchase``,
    ``n_purchases`` (purchase lines; a customer can have several a day) and ``total_spend``
    (dollars, rounded to cents). Items: the one pseudo item.
    """
    path = Path(path)
    if path.is_dir():
        path = require_file(path, CDNOW_FILE, (CDNOW_FILE,))
    elif not path.is_file():
        raise FileNotFoundError(f"CDNOW file not found: {path}")
    names = ("customer_id", "date", "number_of_cds", "dollar_value")
    table = read_fields(path, None, names, "ascii")
    if table.linenos and table["customer_id"][0].lower() == "customer_id":
        table = Table(path, table.linenos[1:], {k: v[1:] for k, v in table.columns.items()})
    for row, customer in enumerate(table["customer_id"]):
        if not customer.isdigit():
            reason = f"customer id must be digits, got {customer!r}"
            raise format_error(path, table.linenos[row], reason)
    user_ids = [str(int(customer)) for customer in table["customer_id"]]
    dates = pd.to_datetime(pd.Series(table["date"]), format="%Y%m%d", errors="coerce")
    raise_at_first(table, "date", dates.isna().to_numpy(), "a YYYYMMDD date")
    dollars = number_values(table, "dollar_value")
    purchases = pd.DataFrame(
        {"user_id": user_ids, "timestamp": dates.dt.tz_localize("UTC"), "spend": dollars}
    )
    by_user = purchases.groupby("user_id", sort=False)
    users = pd.DataFrame(
        {
            "first_purchase": by_user["timestamp"].min().astype("datetime64[ns, UTC]"),
            "n_purchases": by_user.size().astype("int64"),
            "total_spend": by_user["spend"].sum().round(2),
        }
    ).reset_index()
    interactions = interactions_frame(
        user_ids,
        [CDNOW_ITEM_ID] * len(user_ids),
        dollars,
        dates.to_numpy("datetime64[ns]"),
        quantity=number_values(table, "number_of_cds", integer=True),
    )
    items = pd.DataFrame({"item_id": pd.Series([CDNOW_ITEM_ID], dtype=object)})
    return RatingsDataset("cdnow", interactions, users, items)
