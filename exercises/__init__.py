"""Exercise stubs: generated from source/ by `python -m utils.build`. Fill them in, then run `pytest tests --impl exercises`."""
