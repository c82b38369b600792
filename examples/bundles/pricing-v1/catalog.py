"""Unit prices of the v1 catalogue (imported relatively by pricing.py)."""

PRICES = {"apple": 0.50, "pear": 0.75, "melon": 2.00}
DEFAULT_PRICE = 1.00
