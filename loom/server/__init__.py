"""The aiohttp server: routes, websocket, workers, request guards."""
