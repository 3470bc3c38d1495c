"""Reports: the attribution dimensions, the daily rollups and the reports read from them."""
