"""The report: the delta report in markdown and the eval generations as tunix-rt traces."""
