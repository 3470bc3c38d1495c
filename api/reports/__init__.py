"""Reports API: overview, attribution and the live panel, read from the daily rollups."""
