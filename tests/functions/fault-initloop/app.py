"""Init never finishes: an infinite loop at import (publish must time out)."""
n = 0
while True:
    n += 1
