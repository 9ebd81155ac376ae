"""Replay buffers as pure ``init/add/sample`` functions over pytrees."""
