"""One command per paper: its grid of runs, its figures and its table
(``python -m experiments.reproduce --paper=<paper>``)."""
