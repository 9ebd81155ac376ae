"""One module per algorithm; each follows the agent contract of DESIGN.md Sec. 2."""
