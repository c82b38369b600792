"""Pricing logic v1: unit price times quantity, 10 % off from 10 items.

The entrypoint is ``pricing:logic``.  State (quotes served per item) is handed
to the next version with schema 1.
"""

import threading
import time

from . import catalog

WORK_SECONDS = 0.001
"""Simulated pricing work per call, so that latency comparisons mean something."""


class PricingLogic:
    def __init__(self) -> None:
        self.quotes: dict[str, int] = {}
        self._lock = threading.Lock()

    def price(self, item: str, qty: int) -> float:
        time.sleep(WORK_SECONDS)
        unit = catalog.PRICES.get(item, catalog.DEFAULT_PRICE)
        total = unit * qty
        if qty >= 10:
            total *= 0.9
        with self._lock:
            self.quotes[item] = self.quotes.get(item, 0) + 1
        return round(total, 2)

    def selftest(self) -> bool:
        return self.price("apple", 2) == 1.0

    def export_state(self) -> tuple[int, object]:
        with self._lock:
            return 1, dict(self.quotes)

    def import_state(self, schema: int, data: object) -> bool:
        if schema != 1 or not isinstance(data, dict):
            return False
        with self._lock:
            self.quotes.update(data)
        return True


logic = PricingLogic()
