"""How a workflow runs: ordering, output cache, interrupt, progress and error events.

Knows nothing of HTTP or torch.
"""
