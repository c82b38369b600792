"""A broken release: melons are free.  Its self-test catches it, so it is never served."""

PRICES = {"apple": 0.50, "pear": 0.75, "melon": 0.00}


class PricingLogic:
    def price(self, item: str, qty: int) -> float:
        return round(PRICES.get(item, 1.00) * qty, 2)

    def selftest(self) -> None:
        for item in ("apple", "pear", "melon"):
            if self.price(item, 1) <= 0:
                raise AssertionError(f"{item} has no price")


logic = PricingLogic()
