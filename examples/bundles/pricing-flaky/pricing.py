"""v1's prices, but every fifth call raises: an error rate of exactly 20 %.

Its self-test passes (the first calls succeed), so only the rollout's analysis
of the error rate can catch it.
"""

import itertools
import time

PRICES = {"apple": 0.50, "pear": 0.75, "melon": 2.00}
WORK_SECONDS = 0.001


class UpstreamError(RuntimeError):
    pass


class PricingLogic:
    def __init__(self) -> None:
        self._calls = itertools.count(1)

    def price(self, item: str, qty: int) -> float:
        time.sleep(WORK_SECONDS)
        if next(self._calls) % 5 == 0:
            raise UpstreamError("the tax service did not answer")
        return round(PRICES.get(item, 1.00) * qty, 2)

    def selftest(self) -> bool:
        return self.price("apple", 2) == 1.0


logic = PricingLogic()
