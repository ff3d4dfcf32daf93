"""What a workflow is: prompt and UI-workflow formats, conversion, validation errors.

Pure Python: no torch, no HTTP.
"""
