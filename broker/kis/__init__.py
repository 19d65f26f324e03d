"""The KIS Open API client: auth and token cache, REST transport, quotes, orders, WebSocket,
and KisBroker (the Broker interface on top of them). Reference: ../shared/kis/KIS_API.md."""
