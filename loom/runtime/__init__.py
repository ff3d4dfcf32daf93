"""The torch side: devices and dtypes, the model manager, model loaders. Only nodes use it."""
