"""v1's prices, but the version is hungry: 48 more threads and 96 MiB more memory per process.

Every call succeeds as fast as v1's, so errors and latency cannot catch it; only
the rollout's runtime-health analysis can (the ``threadCount`` and
``residentMemory`` builtin metrics, judged against the stable pods').  Its
``teardown()`` gives both back when the version is retired.
"""

import threading
import time

PRICES = {"apple": 0.50, "pear": 0.75, "melon": 2.00}
WORK_SECONDS = 0.001
THREADS = 48
BALLAST_BYTES = 96 * 2**20


class PricingLogic:
    def __init__(self) -> None:
        self._stop = threading.Event()
        # Written byte by byte, so that the pages are resident, not merely reserved.
        self._ballast = bytearray(b"\x5a") * BALLAST_BYTES
        self._workers = [
            threading.Thread(target=self._stop.wait, name=f"hungry-{n}", daemon=True)
            for n in range(THREADS)
        ]
        for worker in self._workers:
            worker.start()

    def price(self, item: str, qty: int) -> float:
        time.sleep(WORK_SECONDS)
        total = PRICES.get(item, 1.00) * qty
        if qty >= 10:
            total *= 0.9
        return round(total, 2)

    def selftest(self) -> bool:
        return self.price("apple", 2) == 1.0

    def teardown(self) -> None:
        self._stop.set()
        self._ballast = bytearray()


logic = PricingLogic()
