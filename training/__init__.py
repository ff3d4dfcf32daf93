"""Training code that produces model files Loom ships (not imported by Loom at run time)."""
