"""HTTP routes, one module per resource; each exposes a ``web.RouteTableDef`` named ``routes``."""
