"""The grids of the five papers, one module each (``PAPER``)."""
