"""Parley signaling: the websocket protocol between clients and the SFU."""
