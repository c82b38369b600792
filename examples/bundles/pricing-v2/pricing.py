"""Pricing logic v2: new prices, 15 % off from 10 items; state schema 2 (reads 1 too)."""

import threading
import time

PRICES = {"apple": 0.60, "pear": 0.80, "melon": 2.50}
DEFAULT_PRICE = 1.20
WORK_SECONDS = 0.001


class PricingLogic:
    def __init__(self) -> None:
        self.quotes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.closed = False

    def price(self, item: str, qty: int) -> float:
        time.sleep(WORK_SECONDS)
        total = PRICES.get(item, DEFAULT_PRICE) * qty
        if qty >= 10:
            total *= 0.85
        with self._lock:
            self.quotes[item] = self.quotes.get(item, 0) + 1
        return round(total, 2)

    def selftest(self) -> bool:
        return self.price("apple", 2) == 1.2

    def export_state(self) -> tuple[int, object]:
        with self._lock:
            return 2, {"quotes": dict(self.quotes)}

    def import_state(self, schema: int, data: object) -> bool:
        if schema == 1 and isinstance(data, dict):
            quotes = data
        elif schema == 2 and isinstance(data, dict):
            quotes = data.get("quotes", {})
        else:
            return False
        with self._lock:
            self.quotes.update(quotes)
        return True

    def teardown(self) -> None:
        self.closed = True


logic = PricingLogic()
