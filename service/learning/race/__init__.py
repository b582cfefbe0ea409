"""Racing candidate configurations on one stream (successive halving)."""
