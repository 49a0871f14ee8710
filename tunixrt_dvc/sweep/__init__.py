"""Results across seeds: DVC experiments grouped by config, summarized and compared."""
