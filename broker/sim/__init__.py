"""A local server that speaks the KIS protocol (REST + WebSocket on 127.0.0.1) for tests and demos.

exchange.py — accounts, tokens, quotas and the order book (PaperBroker under market/accounting)
rest.py     — the HTTP front: paths, headers, TR ids, envelopes, error codes, paging, admin
ws.py       — the real-time front: subscribe acks, H0STCNT0/H0STASP0 feed, encrypted notices
faults.py   — switchable fault injection
server.py   — SimServer: starts/stops both fronts on free ports
venue.py    — SimVenue: the Venue protocol over SimServer + KisBroker
"""
