"""v1's prices, five times slower: only the rollout's latency analysis can catch it."""

import time

PRICES = {"apple": 0.50, "pear": 0.75, "melon": 2.00}
WORK_SECONDS = 0.005


class PricingLogic:
    def price(self, item: str, qty: int) -> float:
        time.sleep(WORK_SECONDS)
        total = PRICES.get(item, 1.00) * qty
        if qty >= 10:
            total *= 0.9
        return round(total, 2)


logic = PricingLogic()
