"""Speed comparisons of memrl against peer libraries, measured in one process."""
