"""Brokers behind one interface: paper (local fills), and later KIS (REST + WebSocket) and its simulator."""
